"""A throw-away single-node Ceph cluster (one mon, one OSD, one radosgw) serving S3 on loopback.

The integration tests and the benchmark's S3 section both run the registry on it. Every daemon
runs in the foreground from a private ceph.conf under ``workdir`` (data, logs, sockets, crash
dumps: nothing outside it) and is stopped by its PID. The settings below are the ones that make a
one-node cluster start in a few seconds on this kind of machine; each is explained where it is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .services import HOST, S3, BenchError, free_port

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
ACCESS_KEY = "MREGTESTACCESSKEY000"
SECRET_KEY = "mreg-test-secret-key-0000000000000000000"
BRING_UP_SECONDS = 60.0  # bound on each wait; a healthy start takes a few seconds

CEPH_CONF = """\
[global]
fsid = {fsid}
mon host = [v2:{host}:{mon_port}]
mon initial members = a
# loopback only, and msgr2 only: without "cluster addr" the OSD's heartbeat ports listen everywhere
public addr = {host}
cluster addr = {host}
ms bind msgr1 = false
# no cephx on a test cluster; radosgw insists on the secure on-wire mode unless told otherwise
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
# one OSD: one copy, small fixed placement groups, no autoscaler, no health nagging
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
# each pool radosgw creates takes 1-2 s with the default proposal interval
paxos propose interval = 0.1
# everything the daemons write stays in the private folder
run dir = {root}/run
admin socket = {root}/run/$cluster-$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
crash dir = {root}/crash
mon cluster log file = {root}/log/cluster.log
mon data = {root}/mon/$cluster-$id
osd data = {root}/osd/$cluster-$id
# bluestore on a sparse file: starts in seconds and keeps data on disk, not in RAM (memstore)
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 21474836480
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 134217728
osd memory target = 939524096

[client.rgw.a]
# tcp_nodelay: without it every S3 request waits ~45 ms (Nagle against delayed ACKs)
rgw frontends = beast endpoint={host}:{rgw_port} tcp_nodelay=1
rgw data = {root}/rgw
# deleted data is freed within a minute, not two hours (the GC tests look at the bucket)
rgw gc obj min wait = 60
"""


@dataclass
class Ceph:
    root: Path
    conf: Path
    endpoint: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *args: str, timeout: float = BRING_UP_SECONDS) -> str:
        """A ceph CLI command against this cluster; its stdout."""
        result = subprocess.run(
            [*args, "-c", str(self.conf)], capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise BenchError(f"{' '.join(args[:3])} failed: {result.stderr.strip()[-500:]}")
        return result.stdout

    def daemon(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.root / "log" / f"{name}.out", "wb")
        with log:
            process = subprocess.Popen(
                [*args, "-c", str(self.conf), "-f"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.processes.append(process)
        return process

    def bucket(self, name: str) -> S3:
        """Create a bucket (the registry does not: it answers 500 NoSuchBucket) and name it."""
        # curl signs a plain PUT correctly (it mis-signs listing queries, unused here)
        result = subprocess.run(
            ["curl", "-sS", "-f", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{ACCESS_KEY}:{SECRET_KEY}",
             "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-X", "PUT", f"{self.endpoint}/{name}"],
            capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            raise BenchError(f"creating bucket {name}: {result.stderr.strip()}")
        return S3(self.endpoint, name, ACCESS_KEY, SECRET_KEY)


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL every daemon by PID (the data is thrown away; a clean SIGTERM costs ~2 s each) and
    reap it: a killed daemon left unreaped lingers as a zombie, which ``kill -0`` cannot tell."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait(timeout=10)
        if _state(process.pid) == "Z":
            raise BenchError(f"{process.args[0]} (pid {process.pid}) is a zombie")


def _state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, Z, ...); None when the PID is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _wait(what: str, ready: Callable[[], bool], processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + BRING_UP_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise BenchError(f"{process.args[0]} exited with {process.returncode} while waiting for {what}")
        if ready():
            return
        time.sleep(0.1)
    raise BenchError(f"{what}: not ready within {BRING_UP_SECONDS}s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def ceph_cluster(workdir: Path) -> Iterator[Ceph]:
    """A running cluster with an S3 user; every daemon stopped on the way out, also on failure."""
    root = workdir
    for sub in ("run", "log", "crash", "mon", "osd/ceph-0", "rgw"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    mon_port, rgw_port = free_port(), free_port()
    fsid = str(uuid.uuid4())
    conf = root / "ceph.conf"
    conf.write_text(CEPH_CONF.format(fsid=fsid, host=HOST, mon_port=mon_port, rgw_port=rgw_port, root=root))
    ceph = Ceph(root, conf, f"http://{HOST}:{rgw_port}")
    try:
        monmap = root / "monmap"
        subprocess.run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:{HOST}:{mon_port}]",
                        str(monmap)], check=True, capture_output=True, timeout=30)
        ceph.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap))
        ceph.daemon("mon", "ceph-mon", "-i", "a")
        osd_id = ceph.run("ceph", "osd", "create").strip()  # waits for the mon to form a quorum
        ceph.run("ceph-osd", "-i", osd_id, "--mkfs")
        ceph.daemon("osd", "ceph-osd", "-i", osd_id)
        _wait("the OSD", lambda: f"osd.{osd_id} up" in ceph.run("ceph", "osd", "dump"), ceph.processes)
        ceph.daemon("rgw", "radosgw", "-n", "client.rgw.a")
        _wait("radosgw", lambda: _answers(ceph.endpoint), ceph.processes)
        ceph.run("radosgw-admin", "user", "create", "--uid=mreg", "--display-name=mreg",
                 f"--access-key={ACCESS_KEY}", f"--secret-key={SECRET_KEY}")
        yield ceph
    finally:
        stop_all(ceph.processes)
