"""mreg-manage's pure parts: references, what was typed, stored logins, certs.d, Link headers."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mreg_proxy.cli.logins import AuthFile, Login, LoginError, auth_files, certs_dir, stored_login, trusted_cas
from mreg_proxy.cli.manage import (
    ManageError, Target, build_parser, checked_args, next_page_path, parse_target, shown, split_scheme,
)

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


def test_auth_files_in_the_order_of_containers_auth_json() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1"}
    home = Path("/home/amy")
    assert auth_files(env, home, 1) == [
        AuthFile(Path("/run/user/1/containers/auth.json")),
        AuthFile(home / ".config/containers/auth.json"),
        AuthFile(home / ".docker/config.json"),
        AuthFile(home / ".dockercfg", legacy=True),
    ]


def test_rootful_podman_without_xdg_runtime_dir_uses_run_containers_uid() -> None:
    assert auth_files({}, Path("/root"), 0)[0] == AuthFile(Path("/run/containers/0/auth.json"))


def test_registry_auth_file_docker_config_and_xdg_config_home_override() -> None:
    env = {"REGISTRY_AUTH_FILE": "/a/auth.json", "XDG_RUNTIME_DIR": "/run/user/1", "XDG_CONFIG_HOME": "/cfg",
           "DOCKER_CONFIG": "/dock"}
    assert [f.path for f in auth_files(env, Path("/h"), 1)] == [
        Path("/a/auth.json"), Path("/cfg/containers/auth.json"), Path("/dock/config.json"), Path("/h/.dockercfg")
    ]


def _write(path: Path, auths: dict[str, object], **more: object) -> AuthFile:
    path.write_text(json.dumps({"auths": auths, **more}))
    return AuthFile(path)


def _token(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _no_helper(name: str, host: str) -> None:
    raise AssertionError(f"no helper should run, not {name} for {host}")


@pytest.mark.parametrize("key", ["reg:5000", "https://reg:5000", "http://reg:5000/v1/", "reg:5000/team"])
def test_login_keys_as_podman_and_docker_write_them(tmp_path: Path, key: str) -> None:
    auth = _write(tmp_path / "auth.json", {key: {"auth": _token("amy:pa:ss")}})
    assert stored_login("reg:5000", [auth], _no_helper) == Login("amy", "pa:ss", str(auth.path))


def test_other_hosts_and_missing_files_are_skipped(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", {"reg:5001": {"auth": _token("x:y")}})
    second = _write(tmp_path / "b.json", {"reg:5000": {"auth": _token("amy:pw")}})
    found = stored_login("reg:5000", [AuthFile(tmp_path / "none.json"), first, second], _no_helper)
    assert found == Login("amy", "pw", str(second.path))


def test_legacy_dockercfg_has_no_auths_key(tmp_path: Path) -> None:
    path = tmp_path / ".dockercfg"
    path.write_text(json.dumps({"reg:5000": {"auth": _token("amy:pw"), "email": ""}}))
    assert stored_login("reg:5000", [AuthFile(path, legacy=True)], _no_helper) == Login("amy", "pw", str(path))


def test_cred_helper_of_the_host_wins_over_the_auths_entry(tmp_path: Path) -> None:
    auth = _write(tmp_path / "config.json", {"reg:5000": {"auth": _token("old:pw")}}, credHelpers={"reg:5000": "pass"})
    asked = []

    def helper(name: str, host: str) -> tuple[str, str]:
        asked.append((name, host))
        return "amy", "from-helper"

    found = stored_login("reg:5000", [auth], helper)
    assert found == Login("amy", "from-helper", f"{auth.path} (credHelpers: docker-credential-pass)")
    assert asked == [("pass", "reg:5000")]


def test_creds_store_is_asked_when_the_file_has_no_auth_for_the_host(tmp_path: Path) -> None:
    auth = _write(tmp_path / "config.json", {"reg:5000": {}}, credsStore="secretservice")
    found = stored_login("reg:5000", [auth], lambda name, host: ("amy", "pw"))
    assert found == Login("amy", "pw", f"{auth.path} (credsStore: docker-credential-secretservice)")


def test_a_helper_without_credentials_lets_the_search_go_on(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", {}, credsStore="pass")
    second = _write(tmp_path / "b.json", {"reg:5000": {"auth": _token("amy:pw")}})
    assert stored_login("reg:5000", [first, second], lambda name, host: None) == Login("amy", "pw", str(second.path))


def test_broken_auth_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("{not json")
    with pytest.raises(LoginError, match="cannot read credentials"):
        stored_login("reg:5000", [AuthFile(path)], _no_helper)


def test_certs_d_folder_is_the_first_that_exists_and_trusts_every_crt(tmp_path: Path) -> None:
    home, etc = tmp_path / "home", tmp_path / "etc-containers"
    (etc / "reg:5000").mkdir(parents=True)
    assert certs_dir("reg:5000", home, [etc]) == etc / "reg:5000"
    user = home / ".config/containers/certs.d/reg:5000"
    user.mkdir(parents=True)
    for name in ("ca.crt", "next.crt", "client.cert", "client.key"):
        (user / name).write_text("x")
    assert certs_dir("reg:5000", home, [etc]) == user
    assert trusted_cas(user) == [user / "ca.crt", user / "next.crt"]
    assert certs_dir("other:5000", home, [etc]) is None


@pytest.mark.parametrize(
    "text, expected",
    [("reg:5000", (None, "reg:5000")), ("https://reg:5000/", ("https", "reg:5000")),
     ("HTTP://reg:5000/team/app", ("http", "reg:5000/team/app"))],
)
def test_url_prefixes_are_accepted(text: str, expected: tuple[str | None, str]) -> None:
    assert split_scheme(text) == expected


def _typed(*argv: str) -> tuple[Target, bool]:
    return checked_args(build_parser().parse_intermixed_args(argv))


def test_options_may_come_after_the_command_and_the_target() -> None:
    args = build_parser().parse_intermixed_args(["ls", "reg:5000", "--ca-cert", "tls.crt", "--insecure"])
    assert (args.command, args.target, args.ca_cert, args.insecure) == ("ls", "reg:5000", Path("tls.crt"), True)


def test_http_prefix_means_plain_http() -> None:
    assert _typed("ls", "http://reg:5000/team/app") == (Target("reg:5000", "team/app"), True)
    assert _typed("ls", "https://reg:5000") == (Target("reg:5000"), False)


def test_the_old_rm_form_is_answered_with_the_new_spelling() -> None:
    with pytest.raises(ManageError, match="old form.*: mreg-manage rm reg:5000/team/app:1.0$"):
        _typed("rm", "reg:5000", "team/app:1.0")


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


def test_ls_hides_referrers_index_tags_unless_all() -> None:
    tags = ["latest", "sha256-" + "ab" * 32, "sha256-short", "v1"]
    assert shown(tags, False) == ["latest", "sha256-short", "v1"]
    assert shown(tags, True) == tags


def test_all_goes_with_ls_only() -> None:
    with pytest.raises(ManageError, match="--all goes with ls"):
        checked_args(build_parser().parse_intermixed_args(["rm", "reg.example/app:1", "--all"]))


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


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["gc", "reg:5000/app"], r"HOST\[:PORT\] only"),
        (["ls", "reg:5000", "--dry-run"], "go with retention"),
        (["gc", "reg:5000", "--min-age", "-1"], "--min-age"),
    ],
)
def test_retention_and_gc_arguments(argv: list[str], problem: str) -> None:
    with pytest.raises(ManageError, match=problem):
        checked_args(build_parser().parse_intermixed_args(argv))


def test_retention_takes_a_host_or_a_repository() -> None:
    args = build_parser().parse_intermixed_args(["retention", "reg:5000/ci/app", "--dry-run"])
    assert checked_args(args) == (Target("reg:5000", "ci/app"), False)
