"""mreg-manage: list and remove images of an mreg registry from the operator's own machine.

    mreg-manage ls HOST[:PORT]                      every repository:tag, sorted
    mreg-manage ls HOST[:PORT]/REPO                 that repository's tags with their digests
                                                    (and how many referrers each image has)
    mreg-manage ls --all ...                        referrers index tags (sha256-<hex>) too
    mreg-manage rm HOST[:PORT]/REPO:TAG             only that tag
    mreg-manage rm HOST[:PORT]/REPO@sha256:...      the manifest, and every tag pointing at it
    mreg-manage pause HOST[:PORT] SECONDS           refuse writes on every replica (before GC)
    mreg-manage resume HOST[:PORT]                  lift that pause
    mreg-manage retention HOST[:PORT][/REPO] [--dry-run] [--allow-empty]
                                                    delete the tags the retention rules let go
    mreg-manage gc HOST[:PORT] [--min-age SECONDS]  free their space, pulls keep working

It speaks the registry API through the proxy, with the credentials ``podman login`` or
``docker login`` stored and the certificates podman trusts (logins.py says where it looks).
Options may come anywhere, as with podman and docker. Only the standard library: it runs wherever
Python 3.11 does.
The environment is read in main() only; everything below it gets what it needs as arguments.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import http.client
import json
import os
import re
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, TextIO
from urllib.parse import urlsplit

from ..spec.referrers_index import is_fallback_tag
from ..spec.names import ACCEPT_ALL, is_digest, is_name, is_tag
from . import OneLineParser, one_line_errors
from .logins import AuthFile, Login, LoginError, auth_files, certs_dir, run_helper, stored_login, trusted_cas

PROG = "mreg-manage"
PAGE_SIZE = 100  # registry 2.8 refuses a catalog page above 1000
MAX_PAGES = 100_000  # a Link loop must end in an error, not hang the operator's terminal
TIMEOUT = 30.0
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class ManageError(Exception):
    """What went wrong, as the one line the operator sees."""


class UnknownRepository(ManageError):
    """The registry does not know the repository (404 on its tag list)."""


# --- what the operator typed ---


@dataclass(frozen=True)
class Target:
    host: str  # HOST[:PORT] as typed; also the key of the credentials
    repo: str | None = None
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.host if self.repo is None else f"{self.host}/{self.repo}"
        if self.tag:
            return f"{text}:{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text


def split_scheme(text: str) -> tuple[str | None, str]:
    """``https://reg:5000/app`` -> ("https", "reg:5000/app"): people paste URLs."""
    for scheme in ("http", "https"):
        if text.lower().startswith(f"{scheme}://"):
            return scheme, text[len(scheme) + 3:].rstrip("/")
    return None, text


def parse_target(text: str, *, reference: bool) -> Target:
    """HOST[:PORT][/REPO] for ``ls`` (reference=False); HOST[:PORT]/REPO:TAG or @DIGEST for ``rm``.
    ``text`` comes without its http(s):// prefix (split_scheme)."""
    host, slash, rest = text.partition("/")
    if not host or "@" in host:
        raise ManageError(f"{text!r}: expected HOST[:PORT]/REPO")
    if not reference:
        if slash and not is_name(rest):
            raise ManageError(f"{text!r}: {rest!r} is not a repository name (lower case, e.g. team/app)")
        return Target(host, rest or None)
    if "@" in rest:
        repo, _, digest = rest.partition("@")
        if not is_digest(digest):
            raise ManageError(f"{text!r}: {digest!r} is not a digest (sha256:...)")
        tag = None
    else:
        repo, _, tag = rest.rpartition(":")
        digest = None
        if not repo or not is_tag(tag):
            raise ManageError(f"{text!r}: expected HOST[:PORT]/REPO:TAG or HOST[:PORT]/REPO@sha256:...")
    if not is_name(repo):
        raise ManageError(f"{text!r}: {repo!r} is not a repository name (lower case, e.g. team/app)")
    return Target(host, repo, tag, digest)


# --- credentials ---


def credentials(
    host: str,
    user: str | None,
    password_stdin: bool,
    stored: Callable[[], Login | None],
    searched: Sequence[AuthFile],
    stdin: TextIO,
    ask: Callable[[str], str],
    ask_secret: Callable[[str], str],
) -> Login:
    """--user (password from stdin or a prompt), else a stored login, else prompts."""
    if user is not None:
        if password_stdin:
            return Login(user, stdin.read().rstrip("\r\n"), "--user")
        if not stdin.isatty():
            raise ManageError("cannot prompt for a password: stdin is not a terminal (use --password-stdin)")
        return Login(user, ask_secret(f"Password for {user}@{host}: "), "--user")
    login = stored()
    if login is not None:
        return login
    if not stdin.isatty():
        where = ", ".join(str(f.path) for f in searched)
        raise ManageError(
            f"no login for {host} in {where}: log in with 'podman login {host}' or 'docker login {host}' "
            "as the user who runs mreg-manage, or pass --user"
        )
    user = ask(f"Username for {host}: ")
    return Login(user, ask_secret("Password: "), "the prompt")


# --- the registry API ---


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def error_code(self) -> str:
        try:
            return str(json.loads(self.body)["errors"][0]["code"])
        except (ValueError, KeyError, IndexError, TypeError):
            return ""

    def error_message(self) -> str:
        try:
            return str(json.loads(self.body)["errors"][0]["message"])
        except (ValueError, KeyError, IndexError, TypeError):
            return self.body.decode(errors="replace").strip()[:200]


class Registry:
    """The registry API of one host: HTTPS first; plain HTTP only when the operator allows it."""

    def __init__(
        self, host: str, login: Login, *, insecure: bool, plain_http: bool, ca_cert: Path | None, certs: Path | None
    ) -> None:
        self.host = host
        self.user = login.user
        self._source = login.source
        token = base64.b64encode(f"{login.user}:{login.password}".encode()).decode()
        self._authorization = f"Basic {token}"
        self._insecure = insecure
        self._scheme = "http" if plain_http else "https"
        self._certs = certs
        self._context = _tls_context(insecure, ca_cert, trusted_cas(certs))
        self.timeout = TIMEOUT  # seconds per request; retention and gc wait longer

    def request(self, method: str, path: str, accept: str = "application/json", body: bytes | None = None) -> Answer:
        """One request; 401 and 403 end the command (nothing else can work without rights)."""
        answer = self._send(method, path, accept, body)
        if answer.status == 401:
            raise ManageError(
                f"{self.host}: authentication failed for user {self.user!r} (401) with the login from "
                f"{self._source}; log in again or pass --user"
            )
        if answer.status == 403:
            raise ManageError(f"{self.host}: user {self.user!r} may not do this (403): {answer.error_message()}")
        return answer

    def _send(self, method: str, path: str, accept: str, body: bytes | None) -> Answer:
        try:
            return self._exchange(method, path, accept, body)
        except ssl.SSLCertVerificationError as exc:
            trusted = f"the CAs of {self._certs} and the system" if self._certs else "the system CAs"
            raise ManageError(
                f"TLS failure with {self.host}: {exc.verify_message or exc.reason} (trusted: {trusted}); "
                f"pass --ca-cert FILE for a self-signed certificate, or put it in "
                f"/etc/containers/certs.d/{self.host}/ca.crt as for podman, or --insecure"
            ) from None
        except (ssl.SSLError, ConnectionResetError) as exc:
            if self._scheme == "http":
                raise ManageError(f"cannot connect to {self.host}: {exc.strerror or exc}") from None
            if self._insecure:
                self._scheme = "http"  # --insecure allows a server without TLS, like podman's
                print(
                    f"mreg-manage: warning: {self.host} does not speak TLS; "
                    "continuing over plain HTTP (--insecure): the password crosses the network in clear",
                    file=sys.stderr,
                )
                return self._send(method, path, accept, body)
            raise ManageError(
                f"TLS failure with {self.host}: {getattr(exc, 'reason', None) or exc}; "
                "if it serves plain HTTP, pass --plain-http"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise ManageError(f"cannot connect to {self.host}: {reason}") from None

    def _exchange(self, method: str, path: str, accept: str, body: bytes | None) -> Answer:
        if self._scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, timeout=self.timeout, context=self._context
            )
        else:
            connection = http.client.HTTPConnection(self.host, timeout=self.timeout)
        try:
            headers = {"Authorization": self._authorization, "Accept": accept}
            if body is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def pages(self, path: str, key: str) -> list[str]:
        """Every entry of a paged list, following the ``Link`` headers."""
        entries: list[str] = []
        next_path: str | None = path
        for _ in range(MAX_PAGES):
            if next_path is None:
                return entries
            answer = self.request("GET", next_path)
            if answer.status != 200:
                raise _Status(answer)
            entries.extend(json.loads(answer.body).get(key) or [])  # "tags": null when none left
            next_path = next_page_path(answer.headers.get("Link"))
        raise ManageError(f"{self.host}: more than {MAX_PAGES} pages for {path}; giving up")


class _Status(Exception):
    """An answer the caller turns into words (404s name what is unknown)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _tls_context(insecure: bool, ca_cert: Path | None, cas: Sequence[Path]) -> ssl.SSLContext:
    """The system CAs, plus --ca-cert, plus the ``certs.d`` CAs podman would trust for the host."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_cert is not None:
        _load_ca(context, ca_cert, f"--ca-cert {ca_cert}")
    for path in cas:
        _load_ca(context, path, str(path))
    return context


def _load_ca(context: ssl.SSLContext, path: Path, name: str) -> None:
    try:
        context.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ManageError(f"{name}: {getattr(exc, 'strerror', None) or exc}") from None


def next_page_path(link: str | None) -> str | None:
    """The path of the ``rel="next"`` page; registries send it relative, some absolute."""
    if not link:
        return None
    match = _NEXT_LINK.search(link)
    if match is None:
        return None
    url = urlsplit(match[1])
    return url.path + (f"?{url.query}" if url.query else "")


# --- the commands ---


def _unexpected(registry: Registry, answer: Answer, what: str) -> ManageError:
    return ManageError(f"{registry.host}: {what} failed ({answer.status} {answer.error_code()}): {answer.error_message()}")


def repository_tags(registry: Registry, repo: str) -> list[str]:
    try:
        return sorted(registry.pages(f"/v2/{repo}/tags/list?n={PAGE_SIZE}", "tags"))
    except _Status as failed:
        if failed.answer.status == 404:
            raise UnknownRepository(f"unknown repository {registry.host}/{repo}") from None
        raise _unexpected(registry, failed.answer, f"listing the tags of {repo}") from None


def shown(tags: list[str], show_all: bool) -> list[str]:
    """The tags ``ls`` prints: referrers index tags (``sha256-<hex>``, the referrers of the image
    with that digest, kept by mreg or a client) only with --all; they are no images of their own."""
    return tags if show_all else [tag for tag in tags if not is_fallback_tag(tag)]


def referrer_counts(registry: Registry, repo: str, tags: list[str]) -> dict[str, int]:
    """digest -> number of referrers, for each digest that has a referrers index tag."""
    counts = {}
    for tag in tags:
        if is_fallback_tag(tag):
            digest = tag.replace("-", ":", 1)
            answer = registry.request("GET", f"/v2/{repo}/referrers/{digest}")
            if answer.status == 200:
                counts[digest] = len(json.loads(answer.body).get("manifests") or [])
    return counts


def tag_digests(registry: Registry, repo: str, tags: list[str] | None = None) -> list[tuple[str, str]]:
    """(tag, digest) for every tag (or those given); a tag deleted meanwhile is left out."""
    found = []
    for tag in repository_tags(registry, repo) if tags is None else tags:
        answer = registry.request("HEAD", f"/v2/{repo}/manifests/{tag}", accept=ACCEPT_ALL)
        if answer.status == 200:
            found.append((tag, answer.headers["Docker-Content-Digest"]))
        elif answer.status != 404:
            raise _unexpected(registry, answer, f"resolving {repo}:{tag}")
    return found


def list_all(registry: Registry, out: TextIO, show_all: bool = False) -> None:
    try:
        repos = registry.pages(f"/v2/_catalog?n={PAGE_SIZE}", "repositories")
    except _Status as failed:
        raise _unexpected(registry, failed.answer, "listing the repositories") from None
    images = []
    for repo in repos:
        try:
            images.extend(f"{repo}:{tag}" for tag in shown(repository_tags(registry, repo), show_all))
        except UnknownRepository:
            continue  # removed since the catalog was read
    for image in sorted(images):
        print(image, file=out)
    if not images:
        print(f"{PROG}: no tagged images in {registry.host}", file=sys.stderr)


def list_repository(registry: Registry, repo: str, out: TextIO, show_all: bool = False) -> None:
    tags = repository_tags(registry, repo)
    counts = referrer_counts(registry, repo, tags)
    rows = tag_digests(registry, repo, shown(tags, show_all))
    if not rows:  # every tag deleted: the repository stays in the catalog
        print(f"{PROG}: {registry.host}/{repo} has no tags", file=sys.stderr)
    width = max((len(tag) for tag, _ in rows), default=0)
    for tag, digest in rows:
        count = counts.get(digest, 0)
        note = f"  {count} referrer{'s' if count != 1 else ''}" if count else ""
        print(f"{tag:<{width}}  {digest}{note}", file=out)


def remove(registry: Registry, target: Target, out: TextIO) -> None:
    assert target.repo is not None
    reference = target.tag or target.digest
    assert reference is not None
    # before the delete: afterwards nothing tells which tags pointed at the digest
    going = [tag for tag, digest in tag_digests(registry, target.repo) if digest == target.digest] if target.digest else []
    answer = registry.request("DELETE", f"/v2/{target.repo}/manifests/{reference}")
    if answer.status == 404:
        repository_tags(registry, target.repo)  # raises "unknown repository" when that is the cause
        raise ManageError(f"unknown {'tag' if target.tag else 'manifest'} {target}")
    if answer.status != 202:
        raise _unexpected(registry, answer, f"deleting {target}")
    if target.tag:
        print(f"deleted {target}", file=out)
    else:
        print(f"deleted {target} (tags: {', '.join(going) if going else 'none'})", file=out)


WRITE_PAUSE_PATH = "/mreg/write-pause"
MAX_PAUSE_SECONDS = 86400  # as the proxy accepts
# after every replica has seen the pause: time for writes already past the check to finish
SETTLE_SECONDS = 5.0


def write_pause(registry: Registry, seconds: int, out: TextIO, sleep: Callable[[float], None] = time.sleep) -> None:
    """Pause writes on every replica (``seconds`` > 0) or lift the pause (0). A pause returns once
    every replica refuses writes: the proxy says how stale a replica's view may be."""
    answer = registry.request("POST", WRITE_PAUSE_PATH, body=json.dumps({"seconds": seconds}).encode())
    if answer.status == 404:
        raise ManageError(f"{registry.host}: this mreg has no write pause (an older mreg-proxy?)")
    if answer.status != 200:
        raise _unexpected(registry, answer, "setting the write pause")
    if not seconds:
        print(f"{registry.host}: writes allowed again", file=out)
        return
    sleep(float(json.loads(answer.body)["propagation_seconds"]) + SETTLE_SECONDS)
    print(f"{registry.host}: writes paused on every replica for {seconds} s (pulls keep working); "
          f"lift with: {PROG} resume {registry.host}", file=out)


RETENTION_PATH = "/mreg/retention"
GC_PATH = "/mreg/gc"
RETENTION_TIMEOUT = 1800.0
GC_TIMEOUT = 3700.0  # the proxy gives the collector an hour


def size_text(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError


def retention(registry: Registry, repo: str | None, dry_run: bool, allow_empty: bool, out: TextIO) -> None:
    """One line per tag that goes (or would go, with --dry-run): REPO:TAG, why, the bytes."""
    registry.timeout = RETENTION_TIMEOUT
    body = json.dumps({"repository": repo, "dry_run": dry_run, "allow_empty": allow_empty}).encode()
    answer = registry.request("POST", RETENTION_PATH, body=body)
    if answer.status == 404:
        raise ManageError(f"{registry.host}: this mreg has no retention (an older mreg-proxy?)")
    if answer.status != 200:
        raise _unexpected(registry, answer, "the retention run")
    report = json.loads(answer.body)
    for text in report["lines"]:
        print(text, file=out)
    for text in report["left_alone"]:
        print(f"{PROG}: left alone: {text}", file=sys.stderr)
    for text in report["moved"]:
        print(f"{PROG}: kept {text}: it moved since it was planned", file=sys.stderr)
    for text in report["failed"]:
        print(f"{PROG}: failed: {text}", file=sys.stderr)
    freed = size_text(report["freed_bytes"])
    if dry_run:
        print(f"{report['tags']} tags would go, {freed} freed once collected (dry run: nothing deleted)", file=sys.stderr)
    else:
        print(f"{report['deleted']} tags deleted, {freed} freed once collected: {PROG} gc {registry.host}", file=sys.stderr)
    if report["failed"]:
        raise ManageError(f"{len(report['failed'])} tags could not be deleted")


def collect(registry: Registry, min_age: int, out: TextIO) -> None:
    registry.timeout = GC_TIMEOUT
    answer = registry.request("POST", GC_PATH, body=json.dumps({"min_age": min_age}).encode())
    if answer.status == 404:
        raise ManageError(f"{registry.host}: this mreg has no garbage collection on demand (an older mreg-proxy?)")
    if answer.status != 200:
        raise _unexpected(registry, answer, "garbage collection")
    result = json.loads(answer.body)
    print(
        f"{registry.host}: garbage collected: {result['forgotten_manifests']} untagged manifests forgotten, "
        f"collector {result['collector_seconds']} s, writes paused {result['paused_seconds']} s (pulls kept working)",
        file=out,
    )


# --- the edge ---

COMMANDS = """\
commands:
  ls HOST[:PORT]                 every repository:tag, sorted
  ls HOST[:PORT]/REPO            the tags of REPO with their digests (and their referrers' count)
  ls --all ...                   referrers index tags (sha256-<hex>) too
  rm HOST[:PORT]/REPO:TAG        only that tag; other tags of the image stay
  rm HOST[:PORT]/REPO@DIGEST     the manifest and every tag pointing at it
  pause HOST[:PORT] SECONDS      refuse pushes and deletes on every replica for SECONDS (at most
                                 86400), e.g. during garbage collection; returns once all refuse
  resume HOST[:PORT]             lift that pause
  retention HOST[:PORT][/REPO]   delete the tags the retention rules (manage-policy) let go, with
                                 --dry-run: only print them (REPO:TAG, why, bytes freed); a rule
                                 that would empty a repository needs --allow-empty
  gc HOST[:PORT]                 garbage-collect now: writes pause (503 + Retry-After) while the
                                 collector runs, pulls keep working (--min-age SECONDS: untagged
                                 manifests younger than that stay, default 600)
HOST may carry http:// (plain HTTP) or https://; options may come anywhere."""


def build_parser() -> argparse.ArgumentParser:
    """One parser, no subparsers, read with parse_intermixed_args: options may come anywhere
    (``mreg-manage ls HOST --ca-cert tls.crt``), as podman and docker allow."""
    parser = OneLineParser(
        prog=PROG,
        usage=f"{PROG} (ls|rm|pause|resume|retention|gc) TARGET [SECONDS] [options]",
        description="List and remove images of an mreg registry, with the login of 'podman login' or "
        "'docker login' (the files of containers-auth.json(5), and docker credential helpers), else a "
        "prompt; certificates in certs.d/HOST:PORT folders are trusted as podman trusts them.",
        epilog=COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["ls", "rm", "pause", "resume", "retention", "gc"], metavar="COMMAND",
                        help="ls, rm, pause, resume, retention or gc")
    parser.add_argument("target", metavar="TARGET", help="HOST[:PORT][/REPO][:TAG|@DIGEST]; http(s):// is allowed")
    # pause's SECONDS; for rm, the old 'rm HOST IMAGE:TAG'
    parser.add_argument("extra", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--user", help="log in as this user instead of a stored login")
    parser.add_argument("--password-stdin", action="store_true", help="read the password of --user from stdin")
    parser.add_argument("--ca-cert", type=Path, metavar="FILE", help="trust this CA (e.g. the registry's self-signed certificate)")
    parser.add_argument("--insecure", action="store_true", help="skip TLS verification; allow plain HTTP when the server has no TLS")
    parser.add_argument("--plain-http", action="store_true", help="talk plain HTTP, no TLS at all")
    parser.add_argument("--all", action="store_true",
                        help="ls: also the referrers index tags (sha256-<hex>: signatures, SBOMs, ... of that image)")
    parser.add_argument("--dry-run", action="store_true", help="retention: print what would go, delete nothing")
    parser.add_argument("--allow-empty", action="store_true",
                        help="retention: a rule may delete every tag of a repository")
    parser.add_argument("--min-age", type=int, default=600, metavar="SECONDS",
                        help="gc: untagged manifests pushed less than SECONDS ago stay (default 600)")
    return parser


def checked_args(args: argparse.Namespace) -> tuple[Target, bool]:
    """(target, plain HTTP?) from what was typed; the old two-word rm form gets the new spelling."""
    if args.command == "pause":
        seconds = args.extra or ""
        if not seconds.isdigit() or not 1 <= int(seconds) <= MAX_PAUSE_SECONDS:
            raise ManageError(f"pause {seconds or '(missing)'}: SECONDS must be 1-{MAX_PAUSE_SECONDS}")
    elif args.extra is not None:
        if args.command == "rm":
            host = split_scheme(args.target)[1].rstrip("/")
            raise ManageError(
                f"'rm HOST IMAGE:TAG' is the old form; the image is one argument now: "
                f"{PROG} rm {host}/{args.extra}"
            )
        raise ManageError(f"{args.command} takes one TARGET, not {args.target!r} and {args.extra!r}")
    if args.password_stdin and args.user is None:
        raise ManageError("--password-stdin needs --user")
    if args.all and args.command != "ls":
        raise ManageError("--all goes with ls")
    if (args.dry_run or args.allow_empty) and args.command != "retention":
        raise ManageError("--dry-run and --allow-empty go with retention")
    if not 0 <= args.min_age <= 30 * 86400:
        raise ManageError("--min-age: 0 to 2592000 seconds")
    scheme, text = split_scheme(args.target)
    if scheme == "https" and args.plain_http:
        raise ManageError(f"{args.target!r} says https:// but --plain-http says plain HTTP")
    target = parse_target(text, reference=args.command == "rm")
    if args.command in ("pause", "resume", "gc") and target.repo is not None:
        raise ManageError(f"{args.target!r}: {args.command} takes HOST[:PORT] only")
    return target, args.plain_http or scheme == "http"


def run(args: argparse.Namespace, env: Mapping[str, str], home: Path, uid: int, stdin: TextIO, out: TextIO) -> None:
    target, plain_http = checked_args(args)
    files = auth_files(env, home, uid)
    search_path = env.get("PATH")

    def stored() -> Login | None:
        return stored_login(target.host, files, lambda name, host: run_helper(name, host, search_path))

    login = credentials(target.host, args.user, args.password_stdin, stored, files, stdin, input, getpass.getpass)
    registry = Registry(
        target.host, login, insecure=args.insecure, plain_http=plain_http, ca_cert=args.ca_cert,
        certs=certs_dir(target.host, home),
    )
    if args.command == "rm":
        remove(registry, target, out)
    elif args.command in ("pause", "resume"):
        write_pause(registry, int(args.extra) if args.command == "pause" else 0, out)
    elif args.command == "retention":
        retention(registry, target.repo, args.dry_run, args.allow_empty, out)
    elif args.command == "gc":
        collect(registry, args.min_age, out)
    elif target.repo is None:
        list_all(registry, out, args.all)
    else:
        list_repository(registry, target.repo, out, args.all)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    with one_line_errors(PROG, (ManageError, LoginError)):
        run(args, os.environ, Path.home(), os.getuid(), sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
