"""mreg-manage's pure parts: references, stored logins, Link headers."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mreg_proxy.cli.manage import ManageError, Target, next_page_path, auth_files, parse_target, stored_credentials

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text,expected",
    [
        ("reg.example:5000", Target("reg.example:5000")),
        ("reg.example/team/app", Target("reg.example", "team/app")),
        ("[::1]:5000/app", Target("[::1]:5000", "app")),
    ],
)
def test_ls_targets(text: str, expected: Target) -> None:
    assert parse_target(text, reference=False) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("reg:5000/team/app:v1", Target("reg:5000", "team/app", tag="v1")),
        (f"reg:5000/team/app@{DIGEST}", Target("reg:5000", "team/app", digest=DIGEST)),
    ],
)
def test_rm_targets(text: str, expected: Target) -> None:
    assert parse_target(text, reference=True) == expected


@pytest.mark.parametrize("text", ["reg:5000", "reg:5000/app", "reg/App:1", "reg/app@sha256", "reg/app:-x", "/app:1"])
def test_rm_needs_a_valid_tag_or_digest(text: str) -> None:
    with pytest.raises(ManageError):
        parse_target(text, reference=True)


def test_ls_refuses_a_tag() -> None:
    with pytest.raises(ManageError):
        parse_target("reg:5000/app:1", reference=False)


def test_target_prints_as_typed() -> None:
    assert str(Target("reg:5000", "team/app", digest=DIGEST)) == f"reg:5000/team/app@{DIGEST}"


def test_auth_files_in_podman_then_docker_order(tmp_path: Path) -> None:
    env = {"REGISTRY_AUTH_FILE": "/a/auth.json", "XDG_RUNTIME_DIR": "/run/user/1"}
    assert auth_files(env, tmp_path) == [
        Path("/a/auth.json"), Path("/run/user/1/containers/auth.json"), tmp_path / ".docker/config.json"
    ]


def _write(path: Path, auths: dict[str, object]) -> Path:
    path.write_text(json.dumps({"auths": auths}))
    return path


def _token(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("key", ["reg:5000", "https://reg:5000", "http://reg:5000/v1/", "reg:5000/team"])
def test_login_keys_as_podman_and_docker_write_them(tmp_path: Path, key: str) -> None:
    path = _write(tmp_path / "auth.json", {key: {"auth": _token("amy:pa:ss")}})
    assert stored_credentials("reg:5000", [path]) == ("amy", "pa:ss")


def test_other_hosts_and_missing_files_are_skipped(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", {"reg:5001": {"auth": _token("x:y")}})
    second = _write(tmp_path / "b.json", {"reg:5000": {"auth": _token("amy:pw")}})
    assert stored_credentials("reg:5000", [tmp_path / "none.json", first, second]) == ("amy", "pw")


def test_broken_auth_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("{not json")
    with pytest.raises(ManageError, match="cannot read credentials"):
        stored_credentials("reg:5000", [path])


@pytest.mark.parametrize(
    "link,expected",
    [
        (None, None),
        ('</v2/_catalog?last=a%2Fb&n=2>; rel="next"', "/v2/_catalog?last=a%2Fb&n=2"),
        ('<https://reg:5000/v2/app/tags/list?last=x&n=5>; rel="next"', "/v2/app/tags/list?last=x&n=5"),
        ('</v2/app/tags/list?last=x>; rel="prev"', None),
    ],
)
def test_next_page_path(link: str | None, expected: str | None) -> None:
    assert next_page_path(link) == expected


def test_usage_errors_are_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mreg_proxy.cli.manage", "frobnicate"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("mreg-manage: error: ")


@pytest.mark.parametrize(
    "args,fragment",
    [(["pause", "reg:5000", "0"], "SECONDS must be 1-86400"), (["pause", "reg:5000", "86401"], "SECONDS must be"),
     (["pause", "reg:5000/team/app", "60"], "HOST[:PORT] only"), (["resume", "reg:5000/app"], "HOST[:PORT] only")],
)
def test_pause_and_resume_take_a_host_and_a_bounded_duration(args: list[str], fragment: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mreg_proxy.cli.manage", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1
