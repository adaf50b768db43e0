"""/metrics: Prometheus text format, admins only by default, counters that follow the traffic."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from proxy_harness import ADMIN, READER, ProxyClient, running_proxy, settings_for
from helpers import basic, free_port

MB = 1 << 20


async def _scrape(proxy: ProxyClient, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await proxy.get("/metrics", headers=basic(*ADMIN) if headers is None else headers)
    assert response.status == 200
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_anonymous_scrape_is_challenged(proxy: ProxyClient) -> None:
    response = await proxy.get("/metrics")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="mreg"')


async def test_reader_may_not_scrape(proxy: ProxyClient) -> None:
    assert (await proxy.get("/metrics", headers=basic(*READER))).status == 403


async def test_admin_gets_prometheus_text(proxy: ProxyClient) -> None:
    response = await proxy.get("/metrics", headers=basic(*ADMIN))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE mreg_requests_total counter" in await response.text()


async def test_counters_follow_traffic(proxy: ProxyClient) -> None:
    for _ in range(3):
        await (await proxy.get(f"/v2/blob/{2 * MB}", headers=basic(*READER))).read()
    await (await proxy.put("/v2/echo/upload", headers=basic(*ADMIN), data=b"x" * 1000)).read()
    await (await proxy.get("/v2/", headers=basic("amy", "wrong"))).read()
    samples = await _scrape(proxy)
    assert samples[("mreg_requests_total", (("method", "GET"), ("status", "2xx")))] == 3
    assert samples[("mreg_requests_total", (("method", "PUT"), ("status", "2xx")))] == 1
    assert samples[("mreg_requests_total", (("method", "GET"), ("status", "4xx")))] == 1
    assert samples[("mreg_sent_bytes_total", ())] >= 3 * 2 * MB
    assert samples[("mreg_received_bytes_total", ())] == 1000
    assert samples[("mreg_request_duration_seconds_count", ())] == 5
    # bcrypt: the reader, the admin, the wrong password; cache: the reader's 2nd and 3rd GET and
    # the admin's scrape itself
    assert samples[("mreg_bcrypt_verifications_total", ())] == 3
    assert samples[("mreg_credential_cache_hits_total", ())] == 3
    assert samples[("mreg_logins_throttled_total", ())] == samples[("mreg_logins_busy_total", ())] == 0


async def test_upstream_errors_are_counted(tmp_path: Path, users_file: Path) -> None:
    async with running_proxy(settings_for(URL(f"http://127.0.0.1:{free_port()}"), tmp_path)) as proxy:
        assert (await proxy.get("/v2/", headers=basic(*ADMIN))).status == 503
        samples = await _scrape(proxy)
    assert samples[("mreg_upstream_errors_total", (("kind", "unreachable"),))] == 1


@pytest.mark.parametrize("mode,status", [("open", 200), ("off", 404)])
async def test_metrics_setting(upstream: TestServer, users_file: Path, tmp_path: Path, mode: str, status: int) -> None:
    async with running_proxy(settings_for(upstream.make_url(""), tmp_path, metrics=mode)) as proxy:
        assert (await proxy.get("/metrics")).status == status
