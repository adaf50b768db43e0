"""Build small but real OCI images on disk (image layouts), for the clients to push."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _put_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def layer_tar(name: str, size: int, seed: int) -> bytes:
    """An uncompressed layer holding one file of pseudo-random (incompressible) bytes."""
    buffer = io.BytesIO()
    content = hashlib.shake_256(f"{seed}".encode()).digest(size) if size else b""
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def make_oci_layout(
    layout: Path, layer_sizes: list[int], *, tag: str = "latest", seed: int = 0,
    config: dict[str, object] | None = None, history: list[dict[str, object]] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """Write an OCI image layout with one image; returns its manifest digest. ``config`` is the
    image's run configuration (default: a Cmd), ``history`` its history and ``annotations`` the
    manifest's, as a pusher may write them."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layers, diff_ids = [], []
    for index, size in enumerate(layer_sizes):
        tar = layer_tar(f"file{index}.bin", size, seed * 1000 + index)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        # compressed already, so that clients push it as is and digests stay comparable
        data = gzip.compress(tar, compresslevel=1, mtime=0)
        layers.append({"mediaType": OCI_LAYER, **_put_blob(layout, data)})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config if config is not None else {"Cmd": ["/file0.bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            **({"history": history} if history is not None else {}),
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **_put_blob(layout, config)},
            "layers": layers,
            **({"annotations": annotations} if annotations else {}),
        },
        sort_keys=True,
    ).encode()
    descriptor = {
        "mediaType": OCI_MANIFEST,
        **_put_blob(layout, manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return str(descriptor["digest"])


def layout_digest(layout: Path) -> str:
    """The manifest digest of the single image in a layout."""
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def layout_blobs(layout: Path) -> set[str]:
    return set(os.listdir(layout / "blobs" / "sha256"))


def rootfs_tar(path: Path, size: int, seed: int) -> None:
    """A tiny root filesystem tarball for `docker import`."""
    path.write_bytes(layer_tar("data.bin", size, seed))


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def make_oci_index_layout(layout: Path, platforms: list[str], *, tag: str = "latest") -> str:
    """Write an OCI image layout whose one entry is a multi-platform index (one small image per
    ``os/arch`` in ``platforms``); returns the index digest."""
    descriptors = []
    for seed, platform in enumerate(platforms, start=100):
        digest = make_oci_layout(layout, [512], tag=tag, seed=seed)
        size = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).stat().st_size
        os_name, arch = platform.split("/")
        descriptors.append(
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
             "platform": {"os": os_name, "architecture": arch}}
        )
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}, sort_keys=True
    ).encode()
    descriptor = {
        "mediaType": OCI_INDEX,
        **_put_blob(layout, index),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return str(descriptor["digest"])
