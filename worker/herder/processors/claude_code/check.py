"""What `herder worker --check` says about claude_code runs on this worker: which isolation they
get (bwrap or the uid-drop fallback, and what that loses), how limits are enforced, whether the
CLI and the workspace root are usable. Lines for people; `ok` False only when the worker is
configured to refuse runs (HERDER_CLAUDE_SANDBOX=bwrap without bwrap, or no usable root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from herder.processors.claude_code.bwrap import probe
from herder.processors.claude_code.sandbox import RunAs, writable_by_others
from herder.processors.claude_code.settings import ClaudeCodeSettings

FALLBACK_LOSES = (
    "own PID namespace (a run's daemons can outlive it; on a non-root worker a run can signal the worker)",
    "private mount view (runs of one uid reach each other's workspaces; CLAUDE.md above the root is read)",
    "separation of concurrent runs (one uid for all of them)",
)


@dataclass
class Report:
    ok: bool = True
    lines: list[str] = field(default_factory=list)


def check(settings: ClaudeCodeSettings) -> Report:
    r = Report()
    run_as = RunAs.for_worker(settings)
    who = f"uid {run_as.uid}" if run_as.drops else f"the worker's uid {os.geteuid()}"
    found = probe(settings.bwrap_bin, run_as.uid, run_as.gid)
    sandboxed = found.sandboxed and settings.sandbox != "none"
    if settings.sandbox == "none":
        r.lines.append("claude_code sandbox: uid-drop (HERDER_CLAUDE_SANDBOX=none) — NOT SANDBOXED")
    elif found.sandboxed:
        r.lines.append(f"claude_code sandbox: bwrap ({found.version}, {found.bwrap}), runs as {who}")
    else:
        r.lines.append(f"claude_code sandbox: uid-drop fallback — NOT SANDBOXED: {found.reason}")
        if settings.sandbox == "bwrap":
            r.ok = False
            r.lines.append("  HERDER_CLAUDE_SANDBOX=bwrap: this worker will refuse claude_code runs")
    if not sandboxed:
        r.lines += [f"  lost: {x}" for x in FALLBACK_LOSES]
        r.lines.append(f"  runs as {who}")
    r.lines.append(f"claude_code limits: {found.limits}")
    root = settings.workspace_root
    try:
        root.mkdir(parents=True, exist_ok=True)
        r.lines.append(f"claude_code workspace root: {root}")
    except OSError as exc:
        r.ok = False
        r.lines.append(f"claude_code workspace root: {root} cannot be created ({exc.strerror})")
    poisonable = writable_by_others(root)
    if poisonable and not sandboxed:
        r.lines.append(
            f"  writable by others above it (CLAUDE.md could be planted): {', '.join(map(str, poisonable))}"
        )
    cli = settings.bin if os.sep in settings.bin else shutil.which(settings.bin)
    version = "not found"
    if cli:
        try:
            out = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=30)
            version = out.stdout.strip() or f"exit {out.returncode}"
        except (OSError, subprocess.SubprocessError) as exc:
            version = f"cannot run ({exc})"
    r.lines.append(f"claude_code CLI: {cli or settings.bin}: {version}")
    return r
