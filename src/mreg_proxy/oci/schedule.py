"""The optional retention schedule (MREG_RETENTION_SCHEDULE): retention, then a collection.

Off by default: deleting tags on a timer is a decision an operator makes, after a dry run. Each
run covers every repository a rule matches (as an admin would), then collects the garbage, so that
the space comes back without anyone restarting anything. A run that fails is logged and the next
one comes at its time; runs never overlap (Maintenance runs one thing at a time).
"""

from __future__ import annotations

import asyncio
import logging

from ..policy.rules import PolicyStore
from ..transport.forwarder import UPSTREAM_ERRORS
from .collect import CollectError, Maintenance
from .retention_runs import RetentionError
from .tagdelete import RegistryAnswer

log = logging.getLogger("mreg.schedule")

BY = "(schedule)"


async def scheduled_retention(maintenance: Maintenance, policy: PolicyStore, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_once(maintenance, policy)
        except Exception:  # a bug in one run must not end the schedule silently: log it, go on
            log.exception("scheduled retention failed; the next run comes in %.0f s", interval)


async def run_once(maintenance: Maintenance, policy: PolicyStore) -> None:
    try:
        report = await maintenance.retention(
            await policy.fresh(), lambda name: True, repository=None, dry_run=False, allow_empty=False, by=BY,
        )
        for text in report.lines():
            log.info("retention: %s", text)
        log.info("scheduled retention: %d tags deleted, %d failed", len(report.deleted), len(report.failed))
        if report.deleted and maintenance.gc_dir is not None:
            collection = await maintenance.collect(BY)
            log.info("scheduled collection: %s", collection.as_json())
    except (RetentionError, CollectError) as exc:
        log.error("scheduled retention failed: %s", exc)
    except RegistryAnswer as answer:
        answer.response.close()
        log.error("scheduled retention failed: %s: the registry answered %d", answer.step, answer.response.status)
    except UPSTREAM_ERRORS as exc:
        log.error("scheduled retention failed: the registry is not reachable: %r", exc)
