"""Operator commands run inside the auth container: manage-user, manage-tls, mreg-gen-tls.

Shared rule: a refusal is one line on stderr (``PROG: error: ...``) and a non-zero exit, with no
file touched. These modules never import aiohttp: they must start fast and ``mreg-gen-tls`` must
run on a host that only has ``cryptography``.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Refusal(Exception):
    """The command will not do what was asked; the message is the one line the operator sees."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``PROG: error: ...``) like every other refusal."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[0]  # a subcommand's prog is "manage-user add"
        self.exit(2, f"{command}: error: {message} (see {self.prog} --help)\n")


def refuse(prog: str, message: str) -> NoReturn:
    """Print the one-line refusal and exit 1."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def warn(prog: str, message: str) -> None:
    print(f"{prog}: warning: {message}", file=sys.stderr)


def os_error_text(exc: OSError) -> str:
    """``PATH: Permission denied`` rather than Python's ``[Errno 13] ...: 'PATH'``."""
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
