from pathlib import Path

import pytest
from yarl import URL

from mreg_proxy.config import ConfigError, Settings, load_settings, settings_from


def test_defaults() -> None:
    s = load_settings([], {})
    assert s == Settings()
    assert (s.listen_host, s.listen_port) == ("0.0.0.0", 5000)
    assert s.upstream == URL("http://127.0.0.1:5001")
    assert s.users_file == Path("/auth/users.yml")
    assert (s.tls_cert, s.tls_key) == (Path("/auth/tls.crt"), Path("/auth/tls.key"))


def test_environment_is_read() -> None:
    s = load_settings([], {"MREG_LISTEN": "[::1]:6000", "MREG_USERS_FILE": "/x/u.yml", "MREG_LOG_LEVEL": "debug"})
    assert (s.listen_host, s.listen_port, s.users_file, s.log_level) == ("::1", 6000, Path("/x/u.yml"), "DEBUG")


def test_flags_win_over_environment() -> None:
    s = load_settings(["--listen", "127.0.0.1:7000", "--realm", "flag"], {"MREG_LISTEN": "0.0.0.0:6000", "MREG_REALM": "env"})
    assert (s.listen_port, s.realm) == (7000, "flag")


@pytest.mark.parametrize(
    "env,fragment",
    [
        ({"MREG_LISTEN": "5000"}, "MREG_LISTEN"),
        ({"MREG_LISTEN": "h:70000"}, "1-65535"),
        ({"MREG_UPSTREAM": "ftp://x"}, "MREG_UPSTREAM"),
        ({"MREG_UPSTREAM": "http://x:1/v2"}, "without a path"),
        ({"MREG_LOG_LEVEL": "LOUD"}, "MREG_LOG_LEVEL"),
        ({"MREG_AUTH_CACHE_TTL": "soon"}, "not a number"),
        ({"MREG_BCRYPT_COST": "40"}, "between"),
        ({"MREG_REALM": 'a"b'}, "MREG_REALM"),
        ({"MREG_USERS_FILE": ""}, "empty path"),
        ({"MREG_METRICS": "public"}, "MREG_METRICS"),
        ({"MREG_EVENT_LOOP": "tokio"}, "MREG_EVENT_LOOP"),
        ({"MREG_MAX_CONNECTIONS": "0"}, "MREG_MAX_CONNECTIONS"),
        ({"MREG_IDLE_TIMEOUT": "0.1"}, "MREG_IDLE_TIMEOUT"),
        ({"MREG_BCRYPT_QUEUE": "0"}, "between"),
        ({"MREG_LOGIN_MAX_DELAY": "forever"}, "not a number"),
        ({"MREG_TRUSTED_PROXIES": "10.0.0.1, proxy.example"}, "proxy.example"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings([], env)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--listen"):
        load_settings(["--listen", "nope"], {})


def test_metrics_need_an_admin_by_default() -> None:
    assert load_settings([], {}).metrics == "admin"
    assert load_settings([], {"MREG_METRICS": "Open"}).metrics == "open"
    assert load_settings(["--metrics", "off"], {"MREG_METRICS": "open"}).metrics == "off"


def test_event_loop_setting() -> None:
    assert load_settings([], {}).event_loop == "auto"
    assert load_settings([], {"MREG_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


def test_uvloop_is_used_only_when_wanted_and_installed() -> None:
    from mreg_proxy.app import loop_factory

    assert loop_factory(Settings(event_loop="asyncio")) is None
    try:
        import uvloop
    except ImportError:
        assert loop_factory(Settings()) is None
    else:
        assert loop_factory(Settings()) is uvloop.new_event_loop


def test_connection_budget_settings() -> None:
    assert (Settings().max_connections, Settings().idle_timeout) == (1000, 60.0)
    s = load_settings(["--max-connections", "50"], {"MREG_IDLE_TIMEOUT": "15"})
    assert (s.max_connections, s.idle_timeout) == (50, 15.0)


def test_login_limits_have_defaults() -> None:
    s = load_settings([], {})
    assert (s.bcrypt_queue, s.login_free_failures, s.login_address_free_failures, s.login_max_delay) == (32, 5, 20, 300)
    assert s.bcrypt_workers >= 1 and s.trusted_proxies == ()


def test_trusted_proxies_are_networks() -> None:
    s = load_settings([], {"MREG_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16,fd00::/8"})
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.1/32", "192.168.0.0/16", "fd00::/8"]


def test_registry_root_is_off_by_default_and_must_be_a_folder(tmp_path: Path) -> None:
    assert load_settings([], {}).registry_root is None
    assert load_settings([], {"MREG_REGISTRY_ROOT": ""}).registry_root is None
    assert load_settings([], {"MREG_REGISTRY_ROOT": str(tmp_path)}).registry_root == tmp_path
    with pytest.raises(ConfigError, match="MREG_REGISTRY_ROOT.*absolute"):
        load_settings([], {"MREG_REGISTRY_ROOT": "relative/path"})
    with pytest.raises(ConfigError, match="MREG_REGISTRY_ROOT.*no such directory"):
        load_settings([], {"MREG_REGISTRY_ROOT": str(tmp_path / "missing")})


def test_the_web_page_is_on_unless_switched_off() -> None:
    assert load_settings([], {}).ui is True
    assert load_settings([], {"MREG_UI": "OFF"}).ui is False
    assert load_settings(["--ui", "on"], {"MREG_UI": "off"}).ui is True
    with pytest.raises(ConfigError, match="MREG_UI 'yes': expected one of on, off"):
        load_settings([], {"MREG_UI": "yes"})


def test_retention_settings(tmp_path: Path) -> None:
    settings = settings_from({}, {"MREG_POLICY_FILE": "/a/p.yml", "MREG_REGISTRY_ROOT": str(tmp_path),
                                  "MREG_GC_DIR": "/g", "MREG_RETENTION_SCHEDULE": "12h"})
    assert (settings.policy_file, settings.registry_root, settings.gc_dir) == (Path("/a/p.yml"), tmp_path, Path("/g"))
    assert settings.retention_schedule == 12 * 3600
    assert settings_from({}, {}).retention_schedule is None
    assert settings_from({}, {"MREG_RETENTION_SCHEDULE": "off"}).retention_schedule is None
    for bad in ("12", "5m", "1y", "daily"):
        with pytest.raises(ConfigError, match="MREG_RETENTION_SCHEDULE"):
            settings_from({}, {"MREG_RETENTION_SCHEDULE": bad})
