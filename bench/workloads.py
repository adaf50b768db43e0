"""What the benchmark does against one endpoint (the registry direct, or mreg in front of it).

Pulls use ``curl`` (C, one process per stream) writing to /dev/null: a Python client, or curl
writing to tmpfs, could not keep up with the registry on two cores. Pushes use http.client: the registry hashes and writes every byte, so it is
the bottleneck there by far. HEAD load is a raw-socket selector loop (see ``head_load``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import selectors
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urljoin, urlsplit

from .services import BenchError

MiB = 1 << 20
PATTERN_BLOCK = MiB
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CURL_MAX_SECONDS = 600


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests and how to authenticate (no credentials for the registry direct)."""

    name: str
    url: str
    credentials: tuple[str, str] | None = None

    def headers(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return {"Authorization": f"Basic {token}"}


def blob_chunks(seed: int, size: int) -> Iterator[bytes]:
    """Incompressible data: one random block, each copy stamped with its offset and ``seed``.

    Fast enough not to slow seeding down, and no two blobs or blocks are alike.
    """
    block = bytearray(os.urandom(PATTERN_BLOCK))
    for offset in range(0, size, PATTERN_BLOCK):
        block[:16] = offset.to_bytes(8, "big") + seed.to_bytes(8, "big")
        yield bytes(block[: min(PATTERN_BLOCK, size - offset)])


def make_blob(seed: int, size: int) -> bytes:
    return b"".join(blob_chunks(seed, size))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    assert parts.hostname is not None
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=120, blocksize=MiB,
                                           context=_unverified_context())
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=120, blocksize=MiB)


def _request(
    conn: http.client.HTTPConnection,
    method: str,
    url: str,
    endpoint: Endpoint,
    *,
    body: object = None,
    headers: dict[str, str] | None = None,
    expect: int,
) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(method, path, body=body, headers={**endpoint.headers(), **(headers or {})})
    response = conn.getresponse()
    response.read()
    if response.status != expect:
        raise BenchError(f"{endpoint.name}: {method} {parts.path} answered {response.status}, expected {expect}")
    return response


def _next_location(endpoint: Endpoint, current: str, response: http.client.HTTPResponse) -> str:
    location = response.getheader("Location")
    if not location:
        raise BenchError(f"{endpoint.name}: upload answer without Location")
    return urljoin(current, location)


def _finish_upload(
    conn: http.client.HTTPConnection, endpoint: Endpoint, location: str, digest: str, body: object
) -> None:
    sep = "&" if "?" in location else "?"
    response = _request(
        conn, "PUT", f"{location}{sep}digest={digest}", endpoint, body=body,
        headers={"Content-Type": "application/octet-stream"}, expect=201,
    )
    if response.getheader("Docker-Content-Digest") != digest:
        raise BenchError(f"{endpoint.name}: pushed {digest}, registry stored {response.getheader('Docker-Content-Digest')}")


def push_monolithic(endpoint: Endpoint, repo: str, data: bytes) -> None:
    """POST, then one PUT carrying the whole blob; the registry checks the digest."""
    digest = sha256_digest(data)
    conn = _connect(endpoint.url)
    try:
        start = f"{endpoint.url}/v2/{repo}/blobs/uploads/"
        response = _request(conn, "POST", start, endpoint, expect=202)
        _finish_upload(conn, endpoint, _next_location(endpoint, start, response), digest, data)
    finally:
        conn.close()


def push_chunked(endpoint: Endpoint, repo: str, data: bytes, chunk: int) -> None:
    """POST, PATCHes of ``chunk`` bytes with Content-Range, then an empty PUT with the digest."""
    digest = sha256_digest(data)
    view = memoryview(data)
    conn = _connect(endpoint.url)
    try:
        location = f"{endpoint.url}/v2/{repo}/blobs/uploads/"
        location = _next_location(endpoint, location, _request(conn, "POST", location, endpoint, expect=202))
        for offset in range(0, len(data), chunk):
            part = view[offset : offset + chunk]
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(part) - 1}",
                "Content-Length": str(len(part)),
            }
            response = _request(conn, "PATCH", location, endpoint, body=part, headers=headers, expect=202)
            location = _next_location(endpoint, location, response)
        _finish_upload(conn, endpoint, location, digest, b"")
    finally:
        conn.close()


def seed_blob(endpoint: Endpoint, repo: str, seed: int, size: int) -> str:
    """Stream a generated blob into the registry without holding it whole; returns its digest."""
    hasher = hashlib.sha256()

    def hashed_chunks() -> Iterator[bytes]:
        for part in blob_chunks(seed, size):
            hasher.update(part)
            yield part

    conn = _connect(endpoint.url)
    try:
        location = f"{endpoint.url}/v2/{repo}/blobs/uploads/"
        location = _next_location(endpoint, location, _request(conn, "POST", location, endpoint, expect=202))
        response = _request(
            conn, "PATCH", location, endpoint, body=hashed_chunks(),
            headers={"Content-Type": "application/octet-stream"}, expect=202,
        )
        digest = "sha256:" + hasher.hexdigest()
        _finish_upload(conn, endpoint, _next_location(endpoint, location, response), digest, b"")
        return digest
    finally:
        conn.close()


def seed_manifest(endpoint: Endpoint, repo: str, tag: str, layer: str, layer_size: int) -> tuple[str, int]:
    """An OCI image manifest with a tiny config and one layer; returns its digest and size."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    push_monolithic(endpoint, repo, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    }).encode()
    conn = _connect(endpoint.url)
    try:
        _request(conn, "PUT", f"{endpoint.url}/v2/{repo}/manifests/{tag}", endpoint, body=manifest,
                 headers={"Content-Type": MANIFEST_TYPE}, expect=201)
    finally:
        conn.close()
    return sha256_digest(manifest), len(manifest)


def _curl_command(endpoint: Endpoint, repo: str, digest: str, *extra: str) -> list[str]:
    # --max-time bounds every transfer, so a stuck server cannot hang the benchmark
    command = ["curl", "--silent", "--show-error", "--fail", "--max-time", str(CURL_MAX_SECONDS), *extra]
    if endpoint.url.startswith("https://"):
        command.append("--insecure")  # the bench's own self-signed certificate
    for name, value in endpoint.headers().items():
        command += ["--header", f"{name}: {value}"]
    return command + [f"{endpoint.url}/v2/{repo}/blobs/{digest}"]


def pull(endpoint: Endpoint, repo: str, blobs: list[tuple[str, int]]) -> float:
    """Pull every blob at once, one curl per blob; returns MB/s over the wall time of the whole.

    Bodies are discarded and only their sizes checked: hashing at line rate would take most of
    a core from the servers on a two-core machine (``verify_pull`` checks the contents).
    """
    return pull_spread([endpoint], repo, blobs)


def pull_spread(endpoints: list[Endpoint], repo: str, blobs: list[tuple[str, int]]) -> float:
    """``pull``, the blobs dealt out over ``endpoints`` in turn (replicas behind one bucket)."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(_curl_command(endpoints[i % len(endpoints)], repo, digest, "--output", os.devnull,
                                       "--write-out", "%{size_download}"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i, (digest, _size) in enumerate(blobs)
    ]
    results = [p.communicate() for p in processes]
    elapsed = time.perf_counter() - started
    for index, (process, (out, err), (_digest, size)) in enumerate(zip(processes, results, blobs)):
        endpoint = endpoints[index % len(endpoints)]
        if process.returncode != 0:
            raise BenchError(f"{endpoint.name}: curl failed: {err.decode().strip()}")
        if int(out) != size:
            raise BenchError(f"{endpoint.name}: pulled {int(out)} bytes, expected {size}")
    return sum(size for _d, size in blobs) / elapsed / 1e6


def verify_pull(endpoint: Endpoint, repo: str, digest: str) -> None:
    """Pull one blob, untimed, and check its sha256 against its digest."""
    hasher = hashlib.sha256()
    with subprocess.Popen(_curl_command(endpoint, repo, digest), stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while chunk := process.stdout.read(4 * MiB):
            hasher.update(chunk)
    if process.returncode != 0 or "sha256:" + hasher.hexdigest() != digest:
        raise BenchError(f"{endpoint.name}: blob {digest} came back as sha256:{hasher.hexdigest()} (curl exit {process.returncode})")


def timed_push(push: object, *args: object) -> float:
    """Seconds one push took (``push`` raises on any failure, a digest mismatch included)."""
    started = time.perf_counter()
    push(*args)  # type: ignore[operator]
    return time.perf_counter() - started


@dataclass(frozen=True)
class HeadResult:
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def head_load(endpoint: Endpoint, url: str, connections: int, seconds: float, *, required: bool = True) -> HeadResult:
    """HEAD ``url`` for ``seconds`` over ``connections`` keep-alive connections, one request in
    flight on each; returns the rate and the latency percentiles (``required=False``: a rate of 0
    when none completed, else that is an error).

    A selector loop over raw sockets: a HEAD answer is just a header block, so this costs the
    client a few tens of microseconds per request, far below what the servers spend. (wrk 4.1
    waits for a body after a HEAD answer that has a Content-Length and stalls.)
    """
    parts = urlsplit(url)
    tls = _unverified_context() if parts.scheme == "https" else None
    headers = {"Host": parts.netloc, "Accept": MANIFEST_TYPE, **endpoint.headers()}
    request = (f"HEAD {parts.path} HTTP/1.1\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    selector = selectors.DefaultSelector()
    sent_at: dict[socket.socket, float] = {}
    pending: dict[socket.socket, bytes] = {}
    latencies: list[float] = []
    try:
        for _ in range(connections):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:  # the handshake while still blocking
                sock = tls.wrap_socket(sock, server_hostname=parts.hostname)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            pending[sock] = b""
        started = time.perf_counter()
        deadline = started + seconds
        for sock in pending:
            sent_at[sock] = time.perf_counter()
            sock.send(request)
        while (now := time.perf_counter()) < deadline:
            for key, _events in selector.select(timeout=deadline - now):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = _receive(sock)
                except ssl.SSLWantReadError:  # a TLS record not complete yet
                    continue
                if not data:
                    raise BenchError(f"{endpoint.name}: the server closed a keep-alive connection")
                buffered = pending[sock] + data
                if not buffered.endswith(b"\r\n\r\n"):
                    pending[sock] = buffered  # a header block split over two reads
                    continue
                if not buffered.startswith(b"HTTP/1.1 200 ") or buffered.count(b"\r\n\r\n") != 1:
                    raise BenchError(f"{endpoint.name}: unexpected HEAD answer: {buffered[:200]!r}")
                done = time.perf_counter()
                latencies.append(done - sent_at[sock])
                pending[sock] = b""
                sent_at[sock] = done
                sock.send(request)
        elapsed = time.perf_counter() - started
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
    if not latencies:
        if not required:  # a server that checks bcrypt on every request (nginx) may finish none
            return HeadResult(0.0, float("nan"), float("nan"))
        raise BenchError(f"{endpoint.name}: no HEAD completed in {seconds}s")
    latencies.sort()
    return HeadResult(len(latencies) / elapsed, _percentile(latencies, 0.5) * 1000, _percentile(latencies, 0.99) * 1000)


def _unverified_context() -> ssl.SSLContext:
    """TLS to the bench's own self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _receive(sock: socket.socket) -> bytes:
    """What is readable now; over TLS also what the TLS layer already decrypted and holds (the
    selector cannot see it)."""
    data = sock.recv(65536)
    if isinstance(sock, ssl.SSLSocket):
        while sock.pending():
            data += sock.recv(65536)
    return data


def check_head(endpoint: Endpoint, url: str, digest: str, length: int) -> None:
    """The manifest HEAD the load test repeats answers 200 with the right digest and length."""
    conn = _connect(endpoint.url)
    try:
        response = _request(conn, "HEAD", url, endpoint, headers={"Accept": MANIFEST_TYPE}, expect=200)
    finally:
        conn.close()
    got = (response.getheader("Docker-Content-Digest"), response.getheader("Content-Length"))
    if got != (digest, str(length)):
        raise BenchError(f"{endpoint.name}: HEAD manifest gave {got}, expected {(digest, str(length))}")


def push_and_sign(endpoint: Endpoint, repo: str, config: str, count: int, salt: str) -> tuple[float, float]:
    """Push ``count`` small image manifests by tag (as ``podman push`` does), each followed by a
    signature-style referrer (``artifactType``, ``subject`` = that image) pushed by digest (as
    ``oras attach`` does); returns the mean milliseconds of an image PUT and of a referrer PUT.

    Every manifest and tag is new (``salt``, a tag-safe word, and the counter make them unique),
    so the registry stores each one; ``config`` is a blob of the repository (``{}``), used as
    the image config and as the empty artifact config.
    """
    image_seconds = referrer_seconds = 0.0
    conn = _connect(endpoint.url)
    try:
        for n in range(count):
            image = json.dumps({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": [],
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
                "annotations": {"bench": f"{salt}-{n}"},
            }).encode()
            referrer = json.dumps({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": "application/vnd.bench.signature",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
                "layers": [], "subject": {"mediaType": MANIFEST_TYPE, "digest": sha256_digest(image), "size": len(image)},
            }).encode()
            started = time.perf_counter()
            _request(conn, "PUT", f"{endpoint.url}/v2/{repo}/manifests/{salt}-{n}", endpoint,
                     body=image, headers={"Content-Type": MANIFEST_TYPE}, expect=201)
            signed = time.perf_counter()
            _request(conn, "PUT", f"{endpoint.url}/v2/{repo}/manifests/{sha256_digest(referrer)}", endpoint,
                     body=referrer, headers={"Content-Type": MANIFEST_TYPE}, expect=201)
            image_seconds += signed - started
            referrer_seconds += time.perf_counter() - signed
    finally:
        conn.close()
    return image_seconds / count * 1000, referrer_seconds / count * 1000
