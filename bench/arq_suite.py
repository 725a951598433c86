"""arq 0.28's own test suite, run against stock arq and against Herder's arq layer (herder.arq).

    python bench/arq_suite.py [--keep DIR] [--only herder|arq] [-k EXPR]

Fetches arq's sdist (it carries tests/) with pip from the package index, builds a throwaway
venv with arq's test dependencies (versions from arq's uv.lock) plus this repo, and runs the
suite twice, each time on its own private redis-server: once as shipped, once with `arq`
resolving to `herder.arq` (a conftest shim, ARQ_SUITE_TARGET=herder). arq's conftest starts
Redis in a container; it is rewritten to point at the private server instead. Tests that assert
arq's internals (its Redis key names, its log lines, private methods, pickle) are excluded for
the Herder run, each with its reason (EXCLUDED below); everything else is expected to pass.
Prints pass/fail per test file and every failing test.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import venv
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARQ_VERSION = "0.28.0"
# arq's testing dependency group, pinned as in its uv.lock (pytest-asyncio 0.23 still has the
# `event_loop` fixture its conftest uses).
TEST_DEPS = [
    "pytest==8.4.2",
    "pytest-asyncio==0.23.6",
    "pytest-mock==3.15.1",
    "pytest-timeout==2.4.0",
    "msgpack==1.1.2",
    "dirty-equals==0.11",
    "pytz==2025.2",
    "tzdata==2025.3",
]

# The Herder run leaves these out. Reasons are grouped; "internals" means the test asserts how
# arq does it (key names, log text, private methods), not what an application sees.
KEYS = "asserts arq's Redis key names/contents (arq:job:*, arq:result:*, the arq:queue zset)"
LOGS = "asserts arq's log line text"
PRIVATE = "calls arq's private worker methods or mocks its internals"
PICKLE = "pickle / custom serializers: herder.arq stores JSON (documented difference)"
ABORT = "Herder cancels a pending job at once; arq leaves it queued until a worker sees the abort"
SIGNALS = "arq's signal handler internals (handle_sig with mocked tasks, its shutdown log text)"
ENV = "needs a Redis on localhost:6379 or the optional watchfiles package (fails on stock arq here too)"
EXCLUDED: dict[str, str] = {
    "test_cli.py::test_run_watch": ENV + "; herder.arq has no --watch",
    "test_utils.py::test_redis_sentinel_failure": ENV,
    "test_cron.py::test_job_successful[0.0]": KEYS + " (arq:in-progress:*)",
    "test_cron.py::test_job_successful[0.5]": KEYS + " (arq:in-progress:*)",
    "test_cron.py::test_job_successful[0.9]": KEYS + " (arq:in-progress:*)",
    "test_cron.py::test_calculate_next_is_called_with_aware_datetime": PRIVATE + " (spies Worker.run_cron)",
    "test_cron.py::test_cron_cancelled": PRIVATE + " (patches arq.worker.keep_cronjob_progress)",
    "test_jobs.py::test_job_in_progress": KEYS + " (sets arq:in-progress:foobar by hand)",
    "test_jobs.py::test_deserialize_result": PICKLE,
    "test_jobs.py::test_deserialize_info": PICKLE,
    "test_jobs.py::test_get_job_result": PRIVATE + " (ArqRedis._get_job_result)",
    "test_jobs.py::test_result_pole_delay_dep": KEYS + " (writes arq:result:* by hand)",
    "test_main.py::test_defer_until": KEYS + " (zscore of arq:queue)",
    "test_main.py::test_defer_by": KEYS + " (zscore of arq:queue)",
    "test_worker.py::test_set_health_check_key": KEYS + " (no other key may exist)",
    "test_worker.py::test_handle_sig": SIGNALS,
    "test_worker.py::test_handle_no_sig": SIGNALS,
    "test_worker.py::test_worker_signal_completes_job_before_shutting_down": SIGNALS
    + " (handle_sig_wait_for_completion; Herder drains on SIGTERM instead)",
    "test_worker.py::test_job_retry_race_condition": PRIVATE + " (Worker.start_jobs)",
    "test_worker.py::test_job_expired": KEYS + " (deletes arq:job:* to simulate expiry)",
    "test_worker.py::test_job_expired_run_check": KEYS + " (deletes arq:job:* to simulate expiry)",
    "test_worker.py::test_many_jobs_expire": KEYS + " (adds ids to the arq:queue zset by hand)",
    "test_worker.py::test_default_job_expiry[None-86400000]": KEYS + " (pttl of arq:job:*)",
    "test_worker.py::test_default_job_expiry[1000000-1000000]": KEYS + " (pttl of arq:job:*)",
    "test_worker.py::test_default_job_expiry[10000000-10000000]": KEYS + " (pttl of arq:job:*)",
    "test_worker.py::test_default_job_expiry[999999999-999999999]": KEYS + " (pttl of arq:job:*)",
    "test_worker.py::test_remain_keys": KEYS,
    "test_worker.py::test_remain_keys_no_results": KEYS,
    "test_worker.py::test_remain_keys_keep_results_forever_in_function": KEYS,
    "test_worker.py::test_remain_keys_keep_results_forever": KEYS,
    "test_worker.py::test_return_exception": PICKLE + " (returns an exception object as the result)",
    "test_worker.py::test_queue_read_limit_equals_max_jobs": PRIVATE + " (queue_read_limit, _poll_iteration)",
    "test_worker.py::test_queue_read_limit_calc": PRIVATE + " (queue_read_limit)",
    "test_worker.py::test_custom_queue_read_limit": PRIVATE + " (queue_read_limit, _poll_iteration)",
    "test_worker.py::test_deserialization_error": PICKLE,
    "test_worker.py::test_incompatible_serializers_1": PICKLE,
    "test_worker.py::test_incompatible_serializers_2": PICKLE,
    "test_worker.py::test_abort_job_before": ABORT,
    "test_worker.py::test_abort_deferred_job_before": ABORT,
    "test_worker.py::test_worker_retry[exception_thrown0]": PRIVATE
    + " (patches connection internals, _poll_iteration)",
    "test_worker.py::test_worker_retry[exception_thrown1]": PRIVATE
    + " (patches connection internals, _poll_iteration)",
    "test_worker.py::test_worker_crash[exception_thrown0]": PRIVATE
    + " (patches connection internals, _poll_iteration)",
    "test_worker.py::test_worker_crash[exception_thrown1]": PRIVATE
    + " (patches connection internals, _poll_iteration)",
}

SHIM = """
import importlib as _importlib
import os as _os
import sys as _sys

if _os.environ.get("ARQ_SUITE_TARGET") == "herder":
    import herder.arq as _harq

    for _sub in ("connections", "constants", "cron", "jobs", "utils", "worker", "cli", "logs", "typing"):
        try:
            _sys.modules["arq." + _sub] = _importlib.import_module("herder.arq." + _sub)
        except ImportError:
            pass
    _sys.modules["arq"] = _harq
"""

FIXTURES = """
@pytest.fixture(scope='session')
def test_redis_host() -> str:
    return '127.0.0.1'


@pytest.fixture(scope='session')
def test_redis_port() -> int:
    return int(os.environ['ARQ_SUITE_REDIS_PORT'])
"""


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def fetch_suite(work: Path) -> Path:
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"arq=={ARQ_VERSION}",
            "-d",
            str(work),
        ]
    )
    with tarfile.open(work / f"arq-{ARQ_VERSION}.tar.gz") as tf:
        members = [m for m in tf.getmembers() if "/tests/" in m.name]
        tf.extractall(work, members=members, filter="data")
    suite = work / "tests"
    (work / f"arq-{ARQ_VERSION}" / "tests").rename(suite)
    conftest = (suite / "conftest.py").read_text()
    conftest = conftest.replace("from testcontainers.redis import RedisContainer\n", "")
    # Drop the container fixtures (redis_version .. test_redis_port) for private-server ones.
    conftest = re.sub(
        r"@pytest.fixture\(scope='session'\)\ndef redis_version.*?(?=@pytest.fixture\(scope='session'\)\ndef test_redis_settings)",
        FIXTURES.lstrip() + "\n\n",
        conftest,
        flags=re.S,
    )
    (suite / "conftest.py").write_text(SHIM + conftest)
    (work / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\ntimeout = 30\n"
        "filterwarnings =\n    ignore::DeprecationWarning\n    ignore::ResourceWarning\n"
    )
    return suite


def make_venv(work: Path) -> Path:
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", *TEST_DEPS, "-e", str(ROOT)])
    return py


def run_suite(py: Path, work: Path, suite: Path, target: str, extra: list[str]) -> dict[str, str]:
    """One pytest process per test file, so a crash in one file costs only that file."""
    sys.path.insert(0, str(ROOT / "worker"))
    from herder.localredis import LocalRedis

    out: dict[str, str] = {}
    server = LocalRedis(appendonly=False)
    server.start()
    log = open(work / f"{target}.log", "w")
    try:
        env = {**os.environ, "ARQ_SUITE_REDIS_PORT": str(server.port), "ARQ_SUITE_TARGET": target}
        for test_file in sorted(suite.glob("test_*.py")):
            report = work / f"{target}-{test_file.stem}.xml"
            report.unlink(missing_ok=True)
            args = [
                str(py),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-c",
                str(work / "pytest.ini"),
                "--rootdir",
                str(work),
                f"--junitxml={report}",
                "--tb=native",
                "-W",
                "ignore",
                f"tests/{test_file.name}",
                *extra,
            ]
            if target == "herder":
                for nodeid in EXCLUDED:
                    if nodeid.startswith(test_file.name + "::"):
                        args += ["--deselect", f"tests/{nodeid}"]
            log.flush()
            rc = subprocess.run(args, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT).returncode
            if not report.exists() or rc not in (0, 1, 5):
                out[f"{test_file.name}::<crashed: exit {rc}>"] = "failed"
            if report.exists():
                out.update(parse_report(report))
    finally:
        log.close()
        server.stop()
    return out


def parse_report(report: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        if not case.get("name"):
            continue
        module = (case.get("classname") or "").removeprefix("tests.")
        name = f"{module.replace('.', '/')}.py::{case.get('name')}"
        if case.find("skipped") is not None:
            out[name] = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            out[name] = "failed"
        else:
            out[name] = "passed"
    return out


def group_of(nodeid: str) -> str:
    return nodeid.split("::")[0].rsplit("/", 1)[-1]


def table(results: dict[str, dict[str, str]]) -> None:
    groups: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for target, res in results.items():
        for nodeid, outcome in res.items():
            groups[group_of(nodeid)][target][outcome] += 1
    if "herder" in results:
        for nodeid in EXCLUDED:
            groups[group_of(nodeid)]["herder"]["excluded"] += 1
    targets = list(results)
    head = f"{'group':<16}" + "".join(f"{t + ' pass/fail/skip/excl':>28}" for t in targets)
    print(head)
    print("-" * len(head))
    total: dict[str, Counter[str]] = defaultdict(Counter)
    for g in sorted(groups):
        row = f"{g:<16}"
        for t in targets:
            c = groups[g][t]
            total[t].update(c)
            row += f"{c['passed']:>14}/{c['failed']}/{c['skipped']}/{c['excluded']:<9}"
        print(row)
    row = f"{'total':<16}"
    for t in targets:
        c = total[t]
        row += f"{c['passed']:>14}/{c['failed']}/{c['skipped']}/{c['excluded']:<9}"
    print(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="work directory to use and keep (default: a temp dir)")
    ap.add_argument("--only", choices=["arq", "herder"])
    ap.add_argument("-k", dest="k", help="pytest -k expression")
    ns = ap.parse_args()
    work = ns.keep or Path(tempfile.mkdtemp(prefix="arq-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    suite = work / "tests"
    if not suite.exists():
        suite = fetch_suite(work)
    py = work / "venv" / "bin" / "python"
    if not py.exists():
        py = make_venv(work)
    extra = ["-k", ns.k] if ns.k else []
    results = {}
    for target in ("arq", "herder"):
        if ns.only in (None, target):
            results[target] = run_suite(py, work, suite, target, extra)
    print(f"arq {ARQ_VERSION} test suite; pass/fail/excluded per file (work dir {work})\n")
    table(results)
    for target, res in results.items():
        for kind in ("failed", "skipped"):
            names = sorted(n for n, o in res.items() if o == kind)
            if names:
                print(f"\n{target}: {kind} ({len(names)})")
                for n in names:
                    print(f"  {n}")
    if "herder" in results and EXCLUDED:
        print("\nexcluded for herder.arq:")
        for n, why in sorted(EXCLUDED.items()):
            print(f"  {n}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
