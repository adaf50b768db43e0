"""mreg-manage (bin/mreg-manage, as operators run it from a checkout) against the real proxy."""

from __future__ import annotations

import base64
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from live import ADMIN, READER, Mreg
from helpers import free_port, require_tool
from registry_calls import artifact, push_tiny, tag_list

pytestmark = pytest.mark.integration

MANAGE = Path(__file__).resolve().parents[2] / "bin" / "mreg-manage"


def auth_json(path: Path, host: str, user: str, password: str, *, key: str | None = None) -> Path:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {key or host: {"auth": token}}}))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home: no stored login unless a test writes one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def base_env(home: Path, **more: str) -> dict[str, str]:
    """PATH, HOME and an empty XDG_RUNTIME_DIR: never the machine's own /run/containers/0/auth.json."""
    (home / "run").mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"), **more}


def manage(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE), *args], input=stdin, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def admin_env(mreg: Mreg, home: Path, tmp_path: Path) -> dict[str, str]:
    """REGISTRY_AUTH_FILE holding the admin's login, as ``podman login --authfile`` writes it."""
    auth = auth_json(tmp_path / "auth.json", mreg.host, *ADMIN)
    return base_env(home, REGISTRY_AUTH_FILE=str(auth))


def admin(mreg: Mreg, env: dict[str, str], command: str, target: str) -> subprocess.CompletedProcess[str]:
    return manage("--plain-http", command, f"{mreg.host}/{target}" if target else mreg.host, env=env)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mreg-manage: error: ")
    return lines[0]


# --- ls ---


def test_ls_host_lists_every_repository_tag_sorted(mreg: Mreg, admin_env: dict[str, str]) -> None:
    push_tiny(mreg, "manage/ls/b", ["x"])
    push_tiny(mreg, "manage/ls/a", ["2", "1"])
    result = admin(mreg, admin_env, "ls", "")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == sorted(lines)
    assert [line for line in lines if line.startswith("manage/ls/")] == ["manage/ls/a:1", "manage/ls/a:2", "manage/ls/b:x"]


def test_ls_repository_shows_tags_with_digests(mreg: Mreg, admin_env: dict[str, str]) -> None:
    first = push_tiny(mreg, "manage/digests", ["v1", "latest"])
    second = push_tiny(mreg, "manage/digests", ["v2"], seed="second")
    result = admin(mreg, admin_env, "ls", "manage/digests")
    assert result.returncode == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [["latest", first], ["v1", first], ["v2", second]]


def test_ls_repository_follows_every_page(mreg: Mreg, admin_env: dict[str, str]) -> None:
    tags = [f"t{i:03}" for i in range(105)]  # more than one page of 100
    push_tiny(mreg, "manage/many", tags)
    result = admin(mreg, admin_env, "ls", "manage/many")
    assert [line.split()[0] for line in result.stdout.splitlines()] == tags


# --- rm ---


def test_rm_tag_removes_only_that_tag(mreg: Mreg, admin_env: dict[str, str]) -> None:
    push_tiny(mreg, "manage/rmtag", ["old", "keep"])
    result = admin(mreg, admin_env, "rm", "manage/rmtag:old")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"deleted {mreg.host}/manage/rmtag:old\n"
    assert tag_list(mreg, "manage/rmtag") == ["keep"]


def test_rm_digest_says_which_tags_went(mreg: Mreg, admin_env: dict[str, str]) -> None:
    digest = push_tiny(mreg, "manage/rmdigest", ["a", "b"])
    push_tiny(mreg, "manage/rmdigest", ["other"], seed="other")
    result = admin(mreg, admin_env, "rm", f"manage/rmdigest@{digest}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"deleted {mreg.host}/manage/rmdigest@{digest} (tags: a, b)\n"
    assert tag_list(mreg, "manage/rmdigest") == ["other"]


# --- credentials ---


def test_podman_runtime_auth_file_is_used(mreg: Mreg, home: Path, tmp_path: Path) -> None:
    auth_json(tmp_path / "run" / "containers" / "auth.json", mreg.host, *READER)
    env = base_env(home, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    push_tiny(mreg, "manage/creds", ["1"])
    assert manage("--plain-http", "ls", f"{mreg.host}/manage/creds", env=env).returncode == 0


def test_docker_config_is_used(mreg: Mreg, home: Path) -> None:
    auth_json(home / ".docker" / "config.json", mreg.host, *READER, key=f"http://{mreg.host}")
    push_tiny(mreg, "manage/creds", ["1"])
    env = base_env(home)
    assert manage("--plain-http", "ls", f"{mreg.host}/manage/creds", env=env).returncode == 0


def test_registry_auth_file_comes_first(mreg: Mreg, home: Path, tmp_path: Path) -> None:
    auth_json(home / ".docker" / "config.json", mreg.host, ADMIN[0], "wrong")
    auth = auth_json(tmp_path / "auth.json", mreg.host, *READER)
    push_tiny(mreg, "manage/creds", ["1"])
    env = base_env(home, REGISTRY_AUTH_FILE=str(auth))
    assert manage("--plain-http", "ls", f"{mreg.host}/manage/creds", env=env).returncode == 0


def test_rootful_podman_login_without_xdg_runtime_dir(mreg: Mreg, home: Path, tmp_path: Path) -> None:
    """`sudo podman login` writes /run/containers/0/auth.json. The test puts its own /run in
    front of mreg-manage in a private mount namespace: the machine's real file is never touched."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("a private mount namespace needs root: CI runs as root")
        pytest.skip("a private mount namespace needs root")
    unshare = require_tool("unshare")
    run = tmp_path / "run"
    auth_json(run / "containers" / "0" / "auth.json", mreg.host, *READER)
    push_tiny(mreg, "manage/creds", ["1"])
    env = {k: v for k, v in base_env(home).items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$1" /run && shift && exec "$@"',
         "sh", str(run), sys.executable, str(MANAGE), "--plain-http", "ls", f"{mreg.host}/manage/creds"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "1"


@pytest.mark.parametrize(
    "where, env_of",
    [
        (".config/containers/auth.json", lambda home: {}),
        ("xdg-config/containers/auth.json", lambda home: {"XDG_CONFIG_HOME": str(home / "xdg-config")}),
        ("docker-config/config.json", lambda home: {"DOCKER_CONFIG": str(home / "docker-config")}),
    ],
    ids=["config-home", "XDG_CONFIG_HOME", "DOCKER_CONFIG"],
)
def test_each_auth_file_location_is_searched(mreg: Mreg, home: Path, where: str, env_of) -> None:
    auth_json(home / where, mreg.host, *READER)
    push_tiny(mreg, "manage/creds", ["1"])
    result = manage("--plain-http", "ls", f"{mreg.host}/manage/creds", env=base_env(home, **env_of(home)))
    assert result.returncode == 0, result.stderr


def test_legacy_dockercfg_is_searched_last(mreg: Mreg, home: Path) -> None:
    token = base64.b64encode(f"{READER[0]}:{READER[1]}".encode()).decode()
    (home / ".dockercfg").write_text(json.dumps({f"https://{mreg.host}": {"auth": token, "email": ""}}))
    push_tiny(mreg, "manage/creds", ["1"])
    assert manage("--plain-http", "ls", f"{mreg.host}/manage/creds", env=base_env(home)).returncode == 0


def fake_helper(folder: Path, name: str, host: str, user: str, password: str) -> Path:
    """docker-credential-NAME as docker runs it: ``get``, the server on stdin, JSON on stdout."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / f"docker-credential-{name}"
    answer = json.dumps({"ServerURL": host, "Username": user, "Secret": password})
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "read -r server\n"
        f"if [ \"$server\" = '{host}' ]; then printf '%s' '{answer}'; exit 0; fi\n"
        "echo 'credentials not found in native keychain'; exit 1\n"
    )
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize("config", ["credHelpers", "credsStore"])
def test_docker_credential_helpers_are_asked(mreg: Mreg, home: Path, config: str) -> None:
    bin_dir = fake_helper(home / "bin", "fake", mreg.host, *READER)
    docker = home / ".docker"
    docker.mkdir()
    setting = {mreg.host: "fake"} if config == "credHelpers" else "fake"
    (docker / "config.json").write_text(json.dumps({"auths": {mreg.host: {}}, config: setting}))
    push_tiny(mreg, "manage/creds", ["1"])
    env = base_env(home, PATH=f"{bin_dir}:/usr/bin:/bin")
    result = manage("--plain-http", "ls", f"{mreg.host}/manage/creds", env=env)
    assert result.returncode == 0, result.stderr


def test_a_refused_stored_login_names_the_file_it_came_from(mreg: Mreg, home: Path) -> None:
    auth = auth_json(home / ".config" / "containers" / "auth.json", mreg.host, READER[0], "stale")
    result = manage("--plain-http", "ls", mreg.host, env=base_env(home))
    assert f"(401) with the login from {auth}" in one_line_error(result)


def test_options_after_the_command_and_an_http_prefix(mreg: Mreg, admin_env: dict[str, str]) -> None:
    push_tiny(mreg, "manage/anywhere", ["1"])
    result = manage("ls", f"http://{mreg.host}/manage/anywhere", "--user", READER[0], "--password-stdin",
                    env=admin_env, stdin=READER[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "1"


def test_a_repository_without_tags_says_so(mreg: Mreg, admin_env: dict[str, str]) -> None:
    push_tiny(mreg, "manage/emptied", ["only"])
    assert admin(mreg, admin_env, "rm", "manage/emptied:only").returncode == 0
    result = admin(mreg, admin_env, "ls", "manage/emptied")
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == f"mreg-manage: {mreg.host}/manage/emptied has no tags\n"


def test_the_old_rm_form_gets_a_hint(mreg: Mreg, admin_env: dict[str, str]) -> None:
    result = manage("rm", mreg.host, "team/app:1.0", env=admin_env)
    assert one_line_error(result).endswith(f"mreg-manage rm {mreg.host}/team/app:1.0")


def test_user_and_password_stdin(mreg: Mreg, home: Path) -> None:
    push_tiny(mreg, "manage/creds", ["1"])
    env = base_env(home)
    result = manage("--plain-http", "--user", READER[0], "--password-stdin", "ls", f"{mreg.host}/manage/creds", env=env, stdin=READER[1] + "\n")
    assert result.returncode == 0, result.stderr


def test_no_credentials_and_no_terminal_is_an_error(mreg: Mreg, home: Path) -> None:
    result = manage("--plain-http", "ls", mreg.host, env=base_env(home))
    error = one_line_error(result)
    assert f"no login for {mreg.host} in {home / 'run' / 'containers' / 'auth.json'}, " in error
    assert f"'podman login {mreg.host}'" in error


# --- errors ---


def test_wrong_password_is_401(mreg: Mreg, home: Path, tmp_path: Path) -> None:
    auth = auth_json(tmp_path / "auth.json", mreg.host, ADMIN[0], "wrong")
    result = manage("--plain-http", "ls", mreg.host, env=base_env(home, REGISTRY_AUTH_FILE=str(auth)))
    assert "authentication failed" in one_line_error(result) and "401" in result.stderr


def test_reader_rm_is_403(mreg: Mreg, home: Path, tmp_path: Path) -> None:
    push_tiny(mreg, "manage/guarded", ["keep"])
    auth = auth_json(tmp_path / "auth.json", mreg.host, *READER)
    env = base_env(home, REGISTRY_AUTH_FILE=str(auth))
    result = manage("--plain-http", "rm", f"{mreg.host}/manage/guarded:keep", env=env)
    assert "may not do this (403)" in one_line_error(result)
    assert tag_list(mreg, "manage/guarded") == ["keep"]


def test_ls_unknown_repository(mreg: Mreg, admin_env: dict[str, str]) -> None:
    result = admin(mreg, admin_env, "ls", "manage/never-pushed")
    assert one_line_error(result).endswith(f"unknown repository {mreg.host}/manage/never-pushed")


def test_rm_in_unknown_repository(mreg: Mreg, admin_env: dict[str, str]) -> None:
    result = admin(mreg, admin_env, "rm", "manage/never-pushed:1")
    assert one_line_error(result).endswith(f"unknown repository {mreg.host}/manage/never-pushed")


def test_rm_unknown_tag(mreg: Mreg, admin_env: dict[str, str]) -> None:
    push_tiny(mreg, "manage/known", ["here"])
    result = admin(mreg, admin_env, "rm", "manage/known:absent")
    assert one_line_error(result).endswith(f"unknown tag {mreg.host}/manage/known:absent")


def test_rm_unknown_digest(mreg: Mreg, admin_env: dict[str, str]) -> None:
    push_tiny(mreg, "manage/known", ["here"])
    digest = "sha256:" + "0" * 64
    result = admin(mreg, admin_env, "rm", f"manage/known@{digest}")
    assert one_line_error(result).endswith(f"unknown manifest {mreg.host}/manage/known@{digest}")


def test_bad_reference_is_refused_before_connecting(admin_env: dict[str, str]) -> None:
    result = manage("rm", "127.0.0.1:1/Team/App", env=admin_env)
    assert "expected HOST[:PORT]/REPO:TAG" in one_line_error(result)


def test_cannot_connect(admin_env: dict[str, str]) -> None:
    result = manage("--plain-http", "--user", "x", "--password-stdin", "ls", f"127.0.0.1:{free_port()}", env=admin_env, stdin="pw")
    assert "cannot connect to" in one_line_error(result)


def test_https_to_a_plain_http_server_is_a_tls_failure(mreg: Mreg, admin_env: dict[str, str]) -> None:
    result = manage("ls", mreg.host, env=admin_env)
    assert "TLS failure" in one_line_error(result) and "--plain-http" in result.stderr


def test_insecure_falls_back_to_plain_http(mreg: Mreg, admin_env: dict[str, str]) -> None:
    push_tiny(mreg, "manage/insecure", ["1"])
    result = manage("--insecure", "ls", f"{mreg.host}/manage/insecure", env=admin_env)
    assert result.returncode == 0, result.stderr
    assert "continuing over plain HTTP" in result.stderr  # the operator learns the password went in clear


# --- a server with a self-signed certificate ---


class _EmptyCatalog(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        body = b'{"repositories": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate: (HOST:PORT, certificate)."""
    openssl = require_tool("openssl")
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "tls.crt", base / "tls.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyCatalog)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_untrusted_certificate_is_a_tls_failure(self_signed: tuple[str, Path], admin_env: dict[str, str]) -> None:
    host, _ = self_signed
    result = manage("--user", "x", "--password-stdin", "ls", host, env=admin_env, stdin="pw")
    assert "TLS failure" in one_line_error(result) and "--ca-cert" in result.stderr


def test_ca_cert_makes_it_trusted(self_signed: tuple[str, Path], admin_env: dict[str, str]) -> None:
    host, cert = self_signed
    result = manage("--ca-cert", str(cert), "--user", "x", "--password-stdin", "ls", host, env=admin_env, stdin="pw")
    assert (result.returncode, result.stderr) == (0, f"mreg-manage: no tagged images in {host}\n")


def test_a_certs_d_folder_is_trusted_as_podman_trusts_it(
    self_signed: tuple[str, Path], admin_env: dict[str, str]
) -> None:
    host, cert = self_signed
    folder = Path(admin_env["HOME"]) / ".config" / "containers" / "certs.d" / host
    folder.mkdir(parents=True)
    (folder / "ca.crt").write_bytes(cert.read_bytes())
    result = manage("ls", host, "--user", "x", "--password-stdin", env=admin_env, stdin="pw")
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == f"mreg-manage: no tagged images in {host}\n"


def test_insecure_skips_verification(self_signed: tuple[str, Path], admin_env: dict[str, str]) -> None:
    host, _ = self_signed
    result = manage("--insecure", "--user", "x", "--password-stdin", "ls", host, env=admin_env, stdin="pw")
    assert (result.returncode, result.stderr) == (0, f"mreg-manage: no tagged images in {host}\n")


def test_ls_hides_referrers_index_tags_and_counts_referrers(mreg: Mreg, admin_env: dict[str, str]) -> None:
    image = push_tiny(mreg, "manage/signed", ["v1"])
    artifact(mreg, "manage/signed", image, note="one")
    artifact(mreg, "manage/signed", image, note="two")
    index_tag = "sha256-" + image.removeprefix("sha256:")
    result = admin(mreg, admin_env, "ls", "manage/signed")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"v1  {image}  2 referrers"]
    listed = admin(mreg, admin_env, "ls", "").stdout.splitlines()
    assert "manage/signed:v1" in listed and f"manage/signed:{index_tag}" not in listed


def test_ls_all_shows_referrers_index_tags(mreg: Mreg, admin_env: dict[str, str]) -> None:
    image = push_tiny(mreg, "manage/signed-all", ["v1"])
    artifact(mreg, "manage/signed-all", image)
    index_tag = "sha256-" + image.removeprefix("sha256:")
    result = manage("--plain-http", "ls", "--all", f"{mreg.host}/manage/signed-all", env=admin_env)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == sorted([index_tag, "v1"])
    everything = manage("--plain-http", "ls", "--all", mreg.host, env=admin_env).stdout.splitlines()
    assert f"manage/signed-all:{index_tag}" in everything
