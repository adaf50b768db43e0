"""The proxy, started as operators start it, upgrades a cheap password hash at its user's login."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.services import start_proxy, stop
from helpers import TEST_COST, make_user
from live import ADMIN, Registry, http
from mreg_proxy.auth.passwords import hash_cost
from mreg_proxy.auth.users import read_users_file

pytestmark = pytest.mark.integration


def test_a_login_rehashes_a_hash_cheaper_than_the_setting(registry: Registry, tmp_path: Path) -> None:
    users = {ADMIN[0]: make_user(*ADMIN, role="admin"), "other": make_user("other", "other-pw")}
    service = start_proxy(registry.url, tmp_path, users, {"MREG_BCRYPT_COST": str(TEST_COST + 1)})
    try:
        assert http("GET", f"{service.url}/v2/", auth=ADMIN)[0] == 200
        deadline = time.monotonic() + 30
        while hash_cost(read_users_file(tmp_path / "users.yml")[ADMIN[0]].password_hash) == TEST_COST:
            assert time.monotonic() < deadline, "the hash was not upgraded"
            time.sleep(0.05)
        after = read_users_file(tmp_path / "users.yml")
        assert hash_cost(after[ADMIN[0]].password_hash) == TEST_COST + 1
        assert after["other"] == users["other"]  # only the user who logged in
        assert http("GET", f"{service.url}/v2/", auth=ADMIN)[0] == 200
        assert http("GET", f"{service.url}/v2/", auth=(ADMIN[0], "wrong"))[0] == 401
    finally:
        stop(service.process)
    assert "re-hashed the password of admin at cost 5 (was 4)" in (tmp_path / "proxy.log").read_text()
