"""Pull times: noted in memory, written at most once per interval, merged, bounded."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mreg_proxy.files import exclusive_lock
from mreg_proxy.policy.pulls import PullTimes, read_pull_times, write_pull_times


async def test_writes_are_claimed_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [1000.0]
    times = PullTimes(tmp_path / "pulls.json", interval=60, clock=lambda: now[0])
    assert not times.claim()  # nothing pending
    times.note("ci/app", "sha256:a", 5.0)
    assert times.claim()
    times.note("ci/app", "sha256:b", 6.0)
    now[0] += 59
    assert not times.claim()
    now[0] += 1
    assert times.claim()
    await times.flush()
    assert read_pull_times(tmp_path / "pulls.json") == {"ci/app@sha256:a": 5.0, "ci/app@sha256:b": 6.0}


def test_the_later_time_wins_and_the_file_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "pulls.json"
    write_pull_times(path, {"a@x": 10.0, "b@x": 20.0})
    write_pull_times(path, {"a@x": 5.0, "c@x": 30.0}, limit=2)
    assert read_pull_times(path) == {"b@x": 20.0, "c@x": 30.0}  # a@x, pulled longest ago, dropped


def test_a_broken_file_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "pulls.json"
    path.write_text("{not json")
    assert read_pull_times(path) == {}
    path.write_text('{"a@x": "yesterday", "b@x": 3}')
    assert read_pull_times(path) == {"b@x": 3.0}


@pytest.mark.timeout(30)
async def test_a_flush_takes_its_batch_on_the_loop_and_notes_meanwhile_wait_for_the_next(tmp_path: Path) -> None:
    path = tmp_path / "pulls.json"
    times = PullTimes(path)
    times.note("ci/app", "sha256:a", 5.0)
    with exclusive_lock(path):  # another replica writing: the flush's thread waits for it
        flushing = asyncio.create_task(times.flush())
        await asyncio.sleep(0)  # one turn of the loop: the batch is taken, the thread started
        assert times._pending == {} and times.pending() == {"ci/app@sha256:a": 5.0}
        times.note("ci/app", "sha256:b", 6.0)  # meanwhile, on the loop
        assert times.pending() == {"ci/app@sha256:a": 5.0, "ci/app@sha256:b": 6.0}
    await asyncio.wait_for(flushing, 10)
    assert read_pull_times(path) == {"ci/app@sha256:a": 5.0}
    assert times.pending() == {"ci/app@sha256:b": 6.0}  # for the next write, not lost


@pytest.mark.timeout(10)
def test_a_fifo_in_place_of_the_file_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "pulls.json"
    os.mkfifo(path)  # opening it for reading would wait for a writer forever
    assert read_pull_times(path) == {}
