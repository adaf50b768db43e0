"""Where podman and docker keep what mreg-manage needs: stored logins and trusted certificates.

Logins are looked up as containers-auth.json(5) describes: the primary file (``REGISTRY_AUTH_FILE``
when set, else ``${XDG_RUNTIME_DIR}/containers/auth.json``, else ``/run/containers/$UID/auth.json``,
which is where a rootful ``podman login`` writes), then ``${XDG_CONFIG_HOME}/containers/auth.json``,
then docker's ``config.json`` (in ``$DOCKER_CONFIG`` or ``~/.docker``), then the legacy
``~/.dockercfg``. In each file a ``credHelpers`` entry for the host wins over its ``auths`` entry;
docker's ``credsStore`` is asked last. Helpers are the ``docker-credential-NAME`` programs on PATH.

Certificates are trusted as podman, skopeo and docker trust them: every ``*.crt`` of the first
existing ``HOST[:PORT]`` folder of ``~/.config/containers/certs.d``, ``/etc/containers/certs.d``
and ``/etc/docker/certs.d``. Only the standard library: this runs on the operator's machine.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence
from urllib.parse import urlsplit

HELPER_TIMEOUT = 30.0  # a helper may unlock a keyring, but must not hang the terminal
MAX_AUTH_FILE_BYTES = 4 << 20
SYSTEM_CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


class LoginError(Exception):
    """A login store that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class AuthFile:
    path: Path
    legacy: bool = False  # ~/.dockercfg: the map of hosts is the whole document, no "auths"


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    source: str  # where it came from, named when the registry refuses it


# (helper name, host) -> (user, password), or None when the helper has nothing for the host
Helper = Callable[[str, str], "tuple[str, str] | None"]


def auth_files(env: Mapping[str, str], home: Path, uid: int) -> list[AuthFile]:
    """containers-auth.json(5)'s search order."""
    if env.get("REGISTRY_AUTH_FILE"):
        primary = Path(env["REGISTRY_AUTH_FILE"])
    elif env.get("XDG_RUNTIME_DIR"):
        primary = Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    else:
        primary = Path(f"/run/containers/{uid}/auth.json")
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    return [
        AuthFile(primary),
        AuthFile(config_home / "containers" / "auth.json"),
        AuthFile(docker / "config.json"),
        AuthFile(home / ".dockercfg", legacy=True),
    ]


def key_host(key: str) -> str:
    """``https://host:5000/v1/`` or ``host:5000/team`` -> ``host:5000``: how both tools key logins."""
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0]


def _read(path: Path) -> dict | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_AUTH_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LoginError(f"cannot read credentials from {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_AUTH_FILE_BYTES:
        raise LoginError(f"cannot read credentials from {path}: larger than {MAX_AUTH_FILE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise LoginError(f"cannot read credentials from {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise LoginError(f"cannot read credentials from {path}: not a JSON object")
    return doc


def _for_host(entries: object, host: str) -> list[tuple[str, object]]:
    return [(k, v) for k, v in entries.items() if key_host(k) == host] if isinstance(entries, dict) else []


def _decoded(path: Path, key: str, entry: object) -> tuple[str, str] | None:
    if not isinstance(entry, dict) or not entry.get("auth"):
        return None  # docker leaves {} under auths when a credsStore holds the secret
    try:
        user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, TypeError):
        raise LoginError(f"{path}: the entry for {key} is not base64 user:password") from None
    return (user, password) if sep else None


def stored_login(host: str, files: Sequence[AuthFile], helper: Helper) -> Login | None:
    """The first login for ``host`` in ``files``; None when none has one."""
    for auth_file in files:
        doc = _read(auth_file.path)
        if doc is None:
            continue
        if auth_file.legacy:
            auths, helpers, store = doc, {}, None
        else:
            auths, helpers, store = doc.get("auths") or {}, doc.get("credHelpers") or {}, doc.get("credsStore")
        named = _for_host(helpers, host)
        if named:  # containers-auth.json(5): then the file's auths entry is not used for the host
            found = helper(str(named[0][1]), host)
            if found:
                return Login(*found, f"{auth_file.path} (credHelpers: docker-credential-{named[0][1]})")
            continue
        for key, entry in _for_host(auths, host):
            decoded = _decoded(auth_file.path, key, entry)
            if decoded:
                return Login(*decoded, str(auth_file.path))
        if isinstance(store, str) and store:
            found = helper(store, host)
            if found:
                return Login(*found, f"{auth_file.path} (credsStore: docker-credential-{store})")
    return None


def run_helper(name: str, host: str, path: str | None) -> tuple[str, str] | None:
    """``docker-credential-NAME get``, as docker runs it: the server on stdin, JSON on stdout."""
    program = f"docker-credential-{name}"
    executable = shutil.which(program, path=path)
    if executable is None:
        raise LoginError(f"the credential helper {program} is not on PATH (named in your podman/docker config)")
    try:
        done = subprocess.run(
            [executable, "get"], input=host.encode(), capture_output=True, timeout=HELPER_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise LoginError(f"{program} get did not answer within {HELPER_TIMEOUT:.0f} s") from None
    output = done.stdout.decode(errors="replace").strip()
    if done.returncode:
        if "credentials not found" in output.lower():
            return None
        why = (done.stderr.decode(errors="replace").strip() or output).splitlines()
        raise LoginError(f"{program} get failed (exit {done.returncode}): {why[0] if why else 'no message'}")
    try:
        answer = json.loads(output)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise LoginError(f"{program} get did not answer with Username and Secret") from None
    if user == "<token>":
        raise LoginError(f"{program} holds an identity token for {host}, not a password: pass --user")
    return str(user), str(secret)


def certs_dir(host: str, home: Path, system_dirs: Sequence[Path] = SYSTEM_CERTS_DIRS) -> Path | None:
    """The ``certs.d/HOST[:PORT]`` folder podman would use: the first that exists."""
    for base in (home / ".config" / "containers" / "certs.d", *system_dirs):
        folder = base / host
        try:
            if folder.is_dir():
                return folder
        except PermissionError:
            continue
    return None


def trusted_cas(folder: Path | None) -> list[Path]:
    """Every ``*.crt`` of the folder: podman, skopeo and docker trust each as a CA."""
    return sorted(folder.glob("*.crt")) if folder is not None else []
