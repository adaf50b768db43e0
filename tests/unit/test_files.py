"""files.py: atomic replacement keeps what the proxy needs to read the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mreg_proxy.files import atomic_write, exclusive_lock

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


def test_root_keeps_the_owner_of_the_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    path.write_text("users: {}\n")
    os.chown(path, 10001, 10001)
    atomic_write(path, b"users: {}\n")
    assert (path.stat().st_uid, path.stat().st_gid) == (10001, 10001)
    assert path.stat().st_mode & 0o777 == 0o600


def test_root_gives_a_new_file_and_the_lock_the_folder_owner(tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    folder.mkdir()
    os.chown(folder, 10001, 10001)
    path = folder / "tls.key"
    with exclusive_lock(path):
        atomic_write(path, b"x")
    for written in (path, folder / ".tls.key.lock"):
        assert (written.stat().st_uid, written.stat().st_gid) == (10001, 10001)
