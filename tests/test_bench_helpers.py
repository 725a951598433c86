"""The queue benchmarks' pure helpers (no Redis, no Node, no timing): the bench modules import,
percentiles and tables come out right, and the cluster bench's queues land on the shards it
claims. The benchmarks themselves are run by hand (docs/benchmarks.md), never by CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from redis.crc import key_slot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import benchlib
import queue_throughput
import scaling
import throughput_report


def test_percentile_is_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert benchlib.percentile(xs, 50) == 50.0
    assert benchlib.percentile(xs, 99) == 99.0
    assert benchlib.percentile([3.0], 99) == 3.0


def test_table_is_markdown_with_aligned_columns() -> None:
    out = benchlib.table(["a", "bb"], [[1, "x"], ["long", 2]])
    lines = out.splitlines()
    assert lines[0] == "| a    | bb |"
    assert lines[1] == "|------|----|"
    assert lines[3] == "| long | 2  |"
    assert len({len(line) for line in lines}) == 1


def test_fmt_and_ratio_say_n_a_for_what_was_not_measured() -> None:
    nan = float("nan")
    assert benchlib.fmt(nan) == "n/a"
    assert benchlib.fmt(12345.678, 0) == "12,346"
    assert throughput_report.ratio(4.0, 2.0) == "2.00x"
    assert throughput_report.ratio(nan, 2.0) == "n/a"
    assert throughput_report.ratio(1.0, 0.0) == "n/a"


@pytest.mark.parametrize("masters", [1, 3])
def test_shard_of_matches_the_slot_ranges_the_cluster_assigns(masters: int) -> None:
    per = 16384 // masters
    for key in ("{a}", "{q0}", "{bench}", "x", "{zz}:job:1"):
        slot = key_slot(key.encode())
        shard = benchlib.shard_of(key, masters)
        assert shard * per <= slot
        assert slot <= (16383 if shard == masters - 1 else (shard + 1) * per - 1)


def test_spread_queues_puts_one_queue_on_each_shard() -> None:
    queues = scaling.spread_queues(3)
    assert len(set(queues)) == 3
    assert [benchlib.shard_of(f"herder:{{{q}}}:ready", 3) for q in queues] == [0, 1, 2]


def test_cpu_since_counts_from_the_last_sample_before_the_start() -> None:
    samples = [(10.0, 1.0), (10.02, 1.5), (10.04, 1.6), (10.06, 1.9)]
    assert queue_throughput.cpu_since(samples, 10.03) == pytest.approx(0.4)
    assert queue_throughput.cpu_since(samples, 9.0) == pytest.approx(0.9)  # from the first sample
