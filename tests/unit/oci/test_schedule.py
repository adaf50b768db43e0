"""The retention schedule: a run that fails in any way is logged, and the next one still comes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mreg_proxy.oci.schedule import scheduled_retention
from mreg_proxy.policy.rules import Policy, PolicyStore, write_policy


class BrokenMaintenance:
    """Stands in for collect.Maintenance: every retention run fails with an unexpected error."""

    gc_dir = None

    def __init__(self) -> None:
        self.runs = 0

    async def retention(self, *args: object, **kwargs: object) -> object:
        self.runs += 1
        raise KeyError("Docker-Content-Digest")


@pytest.mark.timeout(30)
async def test_a_failed_run_is_logged_and_the_schedule_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_policy(tmp_path / "policy.yml", Policy())
    maintenance = BrokenMaintenance()
    task = asyncio.create_task(scheduled_retention(maintenance, PolicyStore(tmp_path / "policy.yml"), 0.01))
    try:
        for _ in range(500):
            if maintenance.runs >= 3 or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done() and maintenance.runs >= 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "scheduled retention failed" in r.message]
    assert failures and failures[0].exc_info is not None
