"""Freed memory goes back to the system: the trimmer runs with the app, on glibc for real."""

from __future__ import annotations

import gc
import platform
from pathlib import Path

import pytest
from yarl import URL

from mreg_proxy.transport import memory
from mreg_proxy.app import create_app
from mreg_proxy.config import Settings


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_is_found_and_trimming_and_capping_arenas_run() -> None:
    assert memory.LIBC is not None
    memory.cap_arenas()
    memory.trim()


def test_the_app_runs_the_trimmer(tmp_path: Path) -> None:
    settings = Settings(upstream=URL("http://127.0.0.1:1"), users_file=tmp_path / "users.yml",
                        tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    assert memory.trimmer in create_app(settings).cleanup_ctx


def test_a_grown_process_collects_its_cycles_before_trimming() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    gc.disable()  # only give_back may collect here
    try:
        Cycle()
        before = gc.get_count()[0]
        memory.give_back(baseline=1)  # any process is "well past" one byte
        assert gc.get_count()[0] < before or gc.get_count()[0] == 0
    finally:
        gc.enable()


def test_a_process_at_its_baseline_is_only_trimmed() -> None:
    gc.disable()
    try:
        for _ in range(10):
            [[]].append([])  # tracked allocations raise the young generation's count
        before = gc.get_count()[0]
        memory.give_back(baseline=memory.resident_bytes() * 10)
        assert gc.get_count()[0] >= before
    finally:
        gc.enable()
