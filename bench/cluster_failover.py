"""Redis Cluster failover benchmark: how long clients and workers are without a killed master's
queues, and how many acknowledged enqueues the failover loses.

Each run starts a real cluster (3 masters with a replica each, cluster-node-timeout 2000 ms unless
--node-timeout says otherwise) and one `herder worker` process (HERDER_REDIS_CLUSTER=true) per
master's queue, enqueues a steady stream round-robin over the three queues, SIGKILLs the master
of the first queue, keeps enqueueing until that queue acknowledges again, then waits for every
queue to drain and looks up every job id (tests/failover.py, the same scenario the test asserts
on):

    python bench/cluster_failover.py                    # 5 runs, full coverage "no" and "yes"
    python bench/cluster_failover.py --runs 3 --coverage no --node-timeout 5000

Columns, per run (times from the SIGKILL, in seconds, on the client's clock):
  promoted  - the replica serves the slot and every node says cluster_state:ok
  client    - the first enqueue acknowledged on the killed master's queue
  worker    - the first job of that queue finished (the job's finished_at, Redis' clock)
  acked     - enqueues Redis acknowledged, all queues
  lost      - acknowledged jobs that exist nowhere afterwards (asynchronous replication)
  window_ms - for lost jobs: how long before the kill the oldest was acknowledged
  unacked_f / unacked_o - enqueues that failed (never acknowledged) on the killed master's
              queue / on the other queues
  not_final - jobs that exist but did not end succeeded or dead (must be 0)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from benchlib import fmt, machine, median, progress, table  # noqa: E402
from failover import Report, failover_run  # noqa: E402


def _cell(x: float | None) -> str:
    return "none" if x is None else fmt(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--coverage", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--producers", type=int, default=4, help="concurrent enqueue loops")
    ap.add_argument("--pause", type=float, default=0.002, help="seconds between one loop's enqueues")
    ap.add_argument("--node-timeout", type=int, default=2000, help="cluster-node-timeout, ms")
    args = ap.parse_args()
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.coverage]
    print(
        f"machine: {machine()}; {args.runs} runs per mode; {args.producers} enqueue loops, pause "
        f"{args.pause}s; cluster-node-timeout {args.node_timeout} ms"
    )
    for full in modes:
        reports: list[Report] = []
        for i in range(args.runs):
            progress(f"full coverage {'yes' if full else 'no'}: run {i + 1}/{args.runs}")
            with tempfile.TemporaryDirectory(prefix="herder-failover-") as d:
                reports.append(
                    asyncio.run(
                        failover_run(
                            Path(d),
                            full_coverage=full,
                            producers=args.producers,
                            pause=args.pause,
                            node_timeout_ms=args.node_timeout,
                        )
                    )
                )
        rows = []
        for n, r in enumerate(reports, 1):
            window = max(r.lost_ack_ages) * 1000 if r.lost_ack_ages else 0.0
            others = sum(v for q, v in r.unacked.items() if q != r.failed_queue)
            rows.append([
                n, fmt(r.promoted_after), _cell(r.client_resumed_after), _cell(r.worker_resumed_after),
                len(r.acked_ids), len(r.lost_acked), fmt(window, 1), r.unacked[r.failed_queue], others,
                len(r.not_final),
            ])  # fmt: skip
        worker = [r.worker_resumed_after for r in reports if r.worker_resumed_after is not None]
        client = [r.client_resumed_after for r in reports if r.client_resumed_after is not None]
        print(f"\ncluster-require-full-coverage {'yes' if full else 'no'}:")
        headers = ["run", "promoted", "client", "worker", "acked", "lost", "window_ms", "unacked_f",
                   "unacked_o", "not_final"]  # fmt: skip
        print(table(headers, rows))
        print(
            f"median client resume {fmt(median(client)) if client else 'n/a'} s (max "
            f"{fmt(max(client)) if client else 'n/a'}), median worker resume "
            f"{fmt(median(worker)) if worker else 'n/a'} s (max {fmt(max(worker)) if worker else 'n/a'}); "
            f"acknowledged jobs lost: {sum(len(r.lost_acked) for r in reports)} of "
            f"{sum(len(r.acked_ids) for r in reports)}"
        )


if __name__ == "__main__":
    main()
