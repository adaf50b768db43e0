"""manage-policy: the retention rules and immutable tags of the registry (policy/rules.py).

Runs inside the auth container and edits the file the running proxy reads (MREG_POLICY_FILE,
default /auth/policy.yml); the proxy notices the change by itself. Every change is validated
first, then written atomically under the file's lock, and recorded in the audit log. A policy
file that cannot be read or parsed is refused and left exactly as it is.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from ..config import Settings
from ..files import exclusive_lock
from ..policy.rules import (
    ImmutableRule, Policy, PolicyFileError, RetentionRule, checked_rule_pattern, make_immutable_rule,
    make_retention_rule, read_policy, write_policy,
)
from . import OneLineParser, Refusal
from .command import audit, run

PROG = "manage-policy"


def rule_text(rule: RetentionRule) -> str:
    return f"retain {rule.pattern} " + " ".join(f"--{clause}" for clause in rule.clauses())


def immutable_text(rule: ImmutableRule) -> str:
    return f"immutable {rule.pattern} {' '.join(rule.tags)}"


def cmd_retain(settings: Settings, args: argparse.Namespace) -> None:
    rule = make_retention_rule(
        args.pattern, args.keep_last, args.keep_tag or (), args.pushed_within, args.pulled_within, args.allow_empty
    )
    path = settings.policy_file
    with exclusive_lock(path):
        policy = read_policy(path)
        others = tuple(r for r in policy.retention if r.pattern != rule.pattern)
        write_policy(path, Policy(others + (rule,), policy.immutable))
    audit(settings, "policy_retain", pattern=rule.pattern, rule=" ".join(rule.clauses()))
    print(rule_text(rule))


def cmd_immutable(settings: Settings, args: argparse.Namespace) -> None:
    rule = make_immutable_rule(args.pattern, args.globs)
    path = settings.policy_file
    with exclusive_lock(path):
        policy = read_policy(path)
        others = tuple(r for r in policy.immutable if r.pattern != rule.pattern)
        write_policy(path, Policy(policy.retention, others + (rule,)))
    audit(settings, "policy_immutable", pattern=rule.pattern, tags=" ".join(rule.tags))
    print(immutable_text(rule))


def cmd_list(settings: Settings, args: argparse.Namespace) -> None:
    policy = read_policy(settings.policy_file)
    if not policy.retention and not policy.immutable:
        print(f"no rules in {settings.policy_file}; add one with: {PROG} retain PATTERN --keep-last N")
        return
    for rule in sorted(policy.retention, key=lambda r: r.pattern):
        print(rule_text(rule))
    for immutable in sorted(policy.immutable, key=lambda r: r.pattern):
        print(immutable_text(immutable))


def cmd_remove(settings: Settings, args: argparse.Namespace) -> None:
    pattern = checked_rule_pattern(args.pattern)
    path = settings.policy_file
    with exclusive_lock(path):
        policy = read_policy(path)
        retention = tuple(r for r in policy.retention if r.pattern != pattern)
        immutable = tuple(r for r in policy.immutable if r.pattern != pattern)
        if len(retention) == len(policy.retention) and len(immutable) == len(policy.immutable):
            raise Refusal(f"no rule for {pattern!r} in {path}")
        write_policy(path, Policy(retention, immutable))
    audit(settings, "policy_removed", pattern=pattern)
    print(f"removed the rules of {pattern}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Manage the retention rules and immutable tags of the mreg registry. The running "
        "proxy picks changes up by itself. The file comes from MREG_POLICY_FILE (default "
        "/auth/policy.yml); changes are recorded in the audit log. Rules: docs/retention.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    retain = commands.add_parser(
        "retain", help="set the retention rule of the repositories matching PATTERN",
        description="A tag survives a retention run when any clause keeps it; the most specific "
        "matching rule decides; repositories no rule matches are never touched. PATTERN is a "
        "repository name, or one with * (one path component) or a final ** (any depth).",
    )
    retain.add_argument("pattern", metavar="PATTERN")
    retain.add_argument("--keep-last", type=int, metavar="N", help="keep the N most recently pushed tags")
    retain.add_argument("--keep-tag", action="append", metavar="GLOB", help="keep tags matching GLOB (* and ?); repeatable")
    retain.add_argument("--pushed-within", metavar="DURATION", help="keep tags pushed within DURATION, e.g. 14d")
    retain.add_argument("--pulled-within", metavar="DURATION", help="keep tags pulled within DURATION, e.g. 30d")
    retain.add_argument("--allow-empty", action="store_true", help="the rule may delete every tag of a repository")
    retain.set_defaults(run=cmd_retain)
    immutable = commands.add_parser(
        "immutable", help="tags matching a GLOB, once pushed, never move and are never deleted",
    )
    immutable.add_argument("pattern", metavar="PATTERN")
    immutable.add_argument("globs", nargs="+", metavar="TAG_GLOB")
    immutable.set_defaults(run=cmd_immutable)
    listing = commands.add_parser("ls", aliases=["list"], help="list the rules")
    listing.set_defaults(run=cmd_list)
    remove = commands.add_parser("rm", aliases=["del"], help="remove the rules (retention and immutable) of PATTERN")
    remove.add_argument("pattern", metavar="PATTERN")
    remove.set_defaults(run=cmd_remove)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    run(PROG, build_parser(), argv, refusals=(PolicyFileError,))


if __name__ == "__main__":
    main()
