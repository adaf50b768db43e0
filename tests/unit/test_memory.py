"""Freed memory goes back to the system: the trimmer runs with the app, on glibc for real."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from yarl import URL

from mreg_proxy import memory
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
