"""A folder laid out as the kubelet mounts a Secret, and updated as the kubelet updates it.

The kubelet's atomic writer puts the files in a timestamped folder ``..2026_01_01_00_00_00.N``,
points the symlink ``..data`` at it, and shows each file as ``NAME -> ..data/NAME``. An update
writes a new timestamped folder, swaps ``..data`` with one rename and removes the old folder: the
path a reader opens never changes, only what it resolves to.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Mapping

_generation = itertools.count()


def write_secret(folder: Path, files: Mapping[str, bytes]) -> None:
    """Create or update ``folder`` with exactly ``files``, the way the kubelet does."""
    folder.mkdir(parents=True, exist_ok=True)
    data_link = folder / "..data"
    old = data_link.resolve() if data_link.is_symlink() else None
    version = folder / f"..2026_01_01_00_00_00.{os.getpid()}_{next(_generation)}"
    version.mkdir(mode=0o755)
    for name, content in files.items():
        (version / name).write_bytes(content)
        (version / name).chmod(0o644)
    staged = folder / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(version.name)
    os.replace(staged, data_link)  # the one atomic step
    for name in files:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(old)
