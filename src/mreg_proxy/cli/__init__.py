"""Command-line tools of mreg.

manage-user and manage-tls run inside the auth container; mreg-gen-tls and mreg-manage on the
operator's machine. None imports aiohttp: they must start fast, and the host-side ones must run
with little installed (mreg-gen-tls needs only ``cryptography``).

The helpers below serve manage-user, manage-tls and mreg-gen-tls: a refusal is one line on stderr
(``PROG: error: ...``) and a non-zero exit, with no file touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from typing import Iterator, NoReturn


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


def stdin_is_absent() -> bool:
    """True when stdin is a character device but no terminal: /dev/null, which is what
    ``podman exec`` / ``kubectl exec`` give without ``-i``. Reading it would look like empty input."""
    return stat.S_ISCHR(os.fstat(sys.stdin.fileno()).st_mode) and not sys.stdin.isatty()


def os_error_text(exc: OSError) -> str:
    """``PATH: Permission denied`` rather than Python's ``[Errno 13] ...: 'PATH'``."""
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


@contextlib.contextmanager
def one_line_errors(prog: str, refusals: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """The edge of every CLI: a Refusal, one of ``refusals`` or an OSError ends in the one-line
    refusal, Ctrl-C in exit status 130; never a traceback."""
    try:
        yield
    except (Refusal, *refusals) as exc:
        refuse(prog, str(exc))
    except OSError as exc:
        refuse(prog, os_error_text(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
