"""The registry's storage tree, read and pruned offline, wherever it lives: a folder or an S3 bucket.

Paths are relative to ``docker/registry/v2`` and "/"-separated, as distribution lays them out on
every driver. Only what prune.py needs: folders, small files, their age, and removing a subtree.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Protocol

from .s3 import S3Client

V2 = "docker/registry/v2"


class Storage(Protocol):
    def describe(self, path: str) -> str:
        """Where ``path`` is, for messages."""

    def folders(self, path: str) -> list[str]:
        """The names of the sub-folders of ``path``, sorted; none when it does not exist."""

    def read(self, path: str) -> bytes | None:
        """A file's bytes; None when there is no such file."""

    def modified(self, path: str) -> float | None:
        """A file's modification time (seconds since the epoch); None when there is none."""

    def remove_tree(self, path: str) -> None:
        """Remove ``path`` and everything under it."""


class FolderStorage:
    """The filesystem driver's tree under ``root`` (its rootdirectory)."""

    def __init__(self, root: Path) -> None:
        self.base = root / V2

    def describe(self, path: str) -> str:
        return str(self.base / path)

    def folders(self, path: str) -> list[str]:
        folder = self.base / path
        return sorted(entry.name for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else []

    def read(self, path: str) -> bytes | None:
        try:
            return (self.base / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def modified(self, path: str) -> float | None:
        try:
            return (self.base / path).stat().st_mtime
        except FileNotFoundError:
            return None

    def remove_tree(self, path: str) -> None:
        if (self.base / path).is_dir():
            shutil.rmtree(self.base / path)


class BucketStorage:
    """The s3 driver's tree: ``client``'s bucket, under the registry's rootdirectory."""

    def __init__(self, client: S3Client) -> None:
        self.client = client
        root = client.settings.root
        self.prefix = f"{root}/{V2}/" if root else f"{V2}/"

    def describe(self, path: str) -> str:
        return f"s3://{self.client.settings.bucket}/{self.prefix}{path}"

    def folders(self, path: str) -> list[str]:
        prefix = f"{self.prefix}{path}/"
        return sorted(folder[len(prefix):].rstrip("/") for folder in self.client.list(prefix).folders)

    def read(self, path: str) -> bytes | None:
        return self.client.read(self.prefix + path)

    def modified(self, path: str) -> float | None:
        return self.client.modified(self.prefix + path)

    def remove_tree(self, path: str) -> None:
        # like the S3 driver's own Delete: every object under the prefix (a "folder" is its objects)
        for key in self.client.list(f"{self.prefix}{path}/", delimiter="").keys:
            self.client.delete(key)


def tag_push_times(root: Path | None, repository: str, tags: Iterable[str]) -> dict[str, float | None]:
    """Each tag's last push time: the modification time of its link (registry 2.8's API tells no
    push time, but it rewrites ``current/link`` on every push of the tag). None for every tag
    when the storage is not mounted (``root`` None) and for a tag whose link is gone. Blocking:
    call it in a thread. Used by retention (oci/retention_runs.py) and the web page's sort."""
    if root is None:
        return {tag: None for tag in tags}
    storage = FolderStorage(root)
    return {tag: storage.modified(f"repositories/{repository}/_manifests/tags/{tag}/current/link") for tag in tags}
