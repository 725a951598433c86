"""The tables of bench/queue_throughput.py (Herder vs arq vs BullMQ), and the issue's targets
checked against them, every ratio from the same run."""

from __future__ import annotations

import argparse

from benchlib import fmt, median, percentile, table

NAMES = {"herder": "Herder", "arq": "arq", "bullmq": "BullMQ"}
Drains = dict[tuple[str, int], list[dict[str, float]]]


def ratio(a: float, b: float) -> str:
    return "n/a" if not b or a != a or b != b else f"{a / b:.2f}x"


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(
    args: argparse.Namespace,
    header: str,
    lat: dict[str, list[list[float]]],
    drains: Drains,
    live: dict[str, dict[str, float]],
    live_stats: dict[str, dict[str, int]],
    memory: dict[str, list[dict[str, float]]],
) -> str:
    out = [header, ""]
    systems = ("herder", "arq", "bullmq")

    def m(system: str, c: int, key: str) -> float:
        return median([r[key] for r in drains[(system, c)]])

    def pct(system: str, p: float) -> float:
        return median([percentile(x, p) for x in lat[system]])

    out.append(
        f"(a) enqueue latency, {args.enqueues} single enqueues per run, one after another, "
        f"median of {args.repeat} runs (ms)"
    )
    labels = {"herder": "Herder enqueue", "arq": "arq enqueue_job", "bullmq": "BullMQ queue.add"}
    rows: list[list[object]] = [[labels[s], fmt(pct(s, 50), 3), fmt(pct(s, 99), 3), ""] for s in systems]
    if lat.get("herder_uvloop"):
        rows.insert(
            1,
            [
                "Herder enqueue (uvloop)",
                fmt(pct("herder_uvloop", 50), 3),
                fmt(pct("herder_uvloop", 99), 3),
                "",
            ],
        )
    rows.append(
        ["Herder enqueue_many(1000)", "", "", fmt(median([median(x) for x in lat["herder_bulk"]]), 4)]
    )
    out += [table(["", "p50 ms", "p99 ms", "ms per job (bulk)"], rows), ""]

    out.append(
        f"(b) no-op jobs/s, one worker process, {args.jobs} pre-filled jobs, median of {args.repeat} runs"
    )
    rows, notes = [], []
    for c in args.concurrency:
        for system in systems:
            for r in drains[(system, c)]:
                if r["capped"]:
                    notes.append(
                        f"{system} c={c}: a run hit the {args.cap:g} s cap with {r['done']:.0f} jobs done"
                    )
        h, a, b = (m(s, c, "jobs_per_s") for s in systems)
        runs = [" / ".join(fmt(r["jobs_per_s"], 0) for r in drains[(s, c)]) for s in systems]
        walls = [fmt(m(s, c, "wall_s"), 1) for s in systems]
        rows.append([c, fmt(h, 0), fmt(a, 0), fmt(b, 0), ratio(h, a), ratio(h, b), *runs, *walls])
    heads = ["concurrency", "Herder jobs/s", "arq jobs/s", "BullMQ jobs/s", "Herder/arq", "Herder/BullMQ"]
    heads += [f"{NAMES[s]} runs" for s in systems] + [f"{NAMES[s]} wall s" for s in systems]
    out.append(table(heads, rows))
    out += [f"  note: {n} (jobs/s measured over the jobs it finished)" for n in notes]
    out.append("")
    out.append(
        "(b) CPU per job in those drains, µs (median): the worker process from its first job's start"
        " (start-up excluded) / the redis-server"
    )
    rows = [
        [c, *(f"{fmt(m(s, c, 'worker_us'), 0)} / {fmt(m(s, c, 'redis_us'), 0)}" for s in systems)]
        for c in args.concurrency
    ]
    out += [table(["concurrency", *(NAMES[s] for s in systems)], rows), ""]

    cmax = max(args.concurrency)
    out.append("(c) Redis work per job, enqueue -> success (per job; see docs/benchmarks.md)")
    rows = []
    for system in systems:
        scenarios = {
            f"backlog c={cmax}": {k: m(system, cmax, k) for k in drains[(system, cmax)][0]},
            "live c=100": live[system],
        }
        for scen, r in scenarios.items():
            keys = ("server_cmds", "client_cmds", "round_trips", "enqueue_rt", "worker_rt")
            rows.append([NAMES[system], scen, *(fmt(r[k]) for k in keys)])
    heads = ["system", "scenario", "commands executed", "commands sent", "round trips"]
    out.append(table([*heads, "of which enqueue", "of which worker"], rows))
    for system in systems:
        top = sorted(live_stats[system].items(), key=lambda kv: -kv[1])[:12]
        per_job = ", ".join(f"{k} {v / args.live_jobs:.2f}" for k, v in top)
        out.append(f"live {NAMES[system]}, commands executed per job by name: {per_job}")
    out.append("")

    out.append(
        f"(d) Redis memory per queued job: {args.memory_jobs} jobs queued, payload {{i}}, "
        f"no worker; median of {len(memory['herder'])} run(s)"
    )
    rows = []
    for system in systems:
        b = median([r["bytes_per_job"] for r in memory[system]])
        ev = median([r["events_bytes_per_job"] for r in memory[system]])
        rows.append(
            [
                NAMES[system],
                fmt(b, 0),
                fmt(median([r["keys_per_job"] for r in memory[system]]), 2),
                fmt(ev, 0) if system == "bullmq" else "",
                ratio(b, median([r["bytes_per_job"] for r in memory["herder"]])),
            ]
        )
    out += [
        table(["system", "bytes per job", "keys per job", "of which events stream", "vs Herder"], rows),
        "",
    ]

    hb = m("herder", cmax, "jobs_per_s"), m("bullmq", cmax, "jobs_per_s")
    h_cmds = (m("herder", cmax, "server_cmds"), live["herder"]["server_cmds"])
    arq_cmds = (m("arq", cmax, "server_cmds"), live["arq"]["server_cmds"])
    rows = [
        [
            "single enqueue p50 <= BullMQ add",
            f"{fmt(pct('herder', 50), 3)} vs {fmt(pct('bullmq', 50), 3)} ms",
            met(pct("herder", 50) <= pct("bullmq", 50)),
        ],
        *(
            [
                [
                    "single enqueue p50 <= BullMQ add, on uvloop",
                    f"{fmt(pct('herder_uvloop', 50), 3)} vs {fmt(pct('bullmq', 50), 3)} ms",
                    met(pct("herder_uvloop", 50) <= pct("bullmq", 50)),
                ]
            ]
            if lat.get("herder_uvloop")
            else []
        ),
        [
            "single enqueue p99 <= BullMQ add",
            f"{fmt(pct('herder', 99), 3)} vs {fmt(pct('bullmq', 99), 3)} ms",
            met(pct("herder", 99) <= pct("bullmq", 99)),
        ],
        [
            "commands executed per job < arq's",
            f"backlog {fmt(h_cmds[0])} vs {fmt(arq_cmds[0])}, live {fmt(h_cmds[1])} vs {fmt(arq_cmds[1])}",
            met(h_cmds[0] < arq_cmds[0] and h_cmds[1] < arq_cmds[1]),
        ],
        [
            f"no-op jobs/s at c={cmax} >= 2x BullMQ",
            f"{fmt(hb[0], 0)} vs {fmt(hb[1], 0)} ({ratio(*hb)})",
            met(hb[0] >= 2 * hb[1]),
        ],
    ]
    out.append("targets (this run)")
    out.append(table(["target", "measured", "met?"], rows))
    return "\n".join(out)
