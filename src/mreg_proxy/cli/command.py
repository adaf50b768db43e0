"""The edge of manage-user and manage-tls: settings from the environment, errors to one line.

Kept apart from the package ``__init__`` because it imports config (and so yarl), which the
host-side mreg-gen-tls must not need.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Sequence

from ..auth.audit import AuditLog
from ..config import ConfigError, Settings, settings_from
from . import one_line_errors

Command = Callable[[Settings, argparse.Namespace], None]


def run(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    refusals: tuple[type[Exception], ...] = (),
) -> None:
    """Parse ``argv``, build Settings from ``os.environ`` and run the chosen subcommand (its
    ``run`` default). Refusal, ConfigError, OSError and ``refusals`` become the one-line refusal."""
    args = parser.parse_args(argv)
    command: Command = args.run
    with one_line_errors(prog, (ConfigError, *refusals)):
        command(settings_from({}, os.environ), args)


def audit(settings: Settings, event: str, **fields: Any) -> None:
    """Record a change made by a CLI in the audit log, with who ran it when known."""
    AuditLog(settings.audit_target, settings.audit_max_bytes).record(event, by=settings.actor, **fields)
