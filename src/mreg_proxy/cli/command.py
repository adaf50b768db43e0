"""The edge of manage-user and manage-tls: settings from the environment, errors to one line.

Kept apart from the package ``__init__`` because it imports config (and so yarl), which the
host-side mreg-gen-tls must not need.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

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
