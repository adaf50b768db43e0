"""The retention engine: which tags of a repository go, and why. Pure: no I/O, no clock.

The dry run and the real run both call ``plan_repository`` with the facts they gathered (tags,
digests, push and pull times) and ``now``: the real run deletes exactly the tags the plan names,
so the two cannot disagree about the same facts.

A tag survives when any clause of the rule that decides for its repository keeps it (the most
specific matching rule, policy/rules.py): one of the ``keep_last`` most recently pushed, a
``keep_tags`` glob, pushed or pulled within a duration. Beyond the rule, a tag always survives
when it is immutable, when its push time is unknown (nothing is deleted on a guess), and a
referrers index tag (``sha256-<hex>``) is no image of its own and is never a candidate. A rule
that would delete every tag of a repository leaves it alone unless empty repositories are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..auth.tokens import parse_duration
from ..spec.referrers_index import is_fallback_tag
from .rules import Policy, RetentionRule, glob_matches


@dataclass(frozen=True, slots=True)
class TagFacts:
    tag: str
    digest: str
    pushed: float | None  # seconds since the epoch; None: unknown
    pulled: float | None  # last pull of the digest in this repository; None: never (as far as recorded)


@dataclass(frozen=True, slots=True)
class Doomed:
    repository: str
    tag: str
    digest: str
    why: str
    freed: int = 0  # bytes this tag's image alone holds (once collected); filled by attribute_bytes


@dataclass(frozen=True, slots=True)
class RepositoryPlan:
    repository: str
    rule: RetentionRule | None
    doomed: tuple[Doomed, ...] = ()
    kept: tuple[str, ...] = ()
    left_alone: str | None = None  # why nothing of this repository goes, when that is a decision

    @property
    def freed(self) -> int:
        return sum(d.freed for d in self.doomed)


def age_text(seconds: float) -> str:
    """``3d4h``, ``5h12m``, ``40m``: what an operator reads in a dry run."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


def plan_repository(
    repository: str, policy: Policy, tags: Sequence[TagFacts], now: float, *, allow_empty: bool = False
) -> RepositoryPlan:
    rule = policy.retention_rule(repository)
    if rule is None:
        return RepositoryPlan(repository, None, kept=tuple(sorted(t.tag for t in tags)), left_alone="no rule")
    candidates = sorted((t for t in tags if not is_fallback_tag(t.tag)), key=lambda t: t.tag)
    if candidates and all(t.pushed is None for t in candidates):
        return RepositoryPlan(
            repository, rule, kept=tuple(sorted(t.tag for t in tags)),
            left_alone=f"the push times of its {len(candidates)} tags are unknown (is the registry's storage "
            "mounted at MREG_REGISTRY_ROOT?): nothing goes on a guess",
        )
    ranked = sorted((t for t in candidates if t.pushed is not None), key=lambda t: (-(t.pushed or 0.0), t.tag))
    rank = {t.tag: index for index, t in enumerate(ranked)}
    pushed_limit = parse_duration(rule.pushed_within).total_seconds() if rule.pushed_within else None
    pulled_limit = parse_duration(rule.pulled_within).total_seconds() if rule.pulled_within else None
    doomed, kept = [], []
    for facts in candidates:
        if _kept(repository, policy, rule, facts, rank, now, pushed_limit, pulled_limit):
            kept.append(facts.tag)
            continue
        why = _why(rule, facts, rank, now, pushed_limit, pulled_limit)
        doomed.append(Doomed(repository, facts.tag, facts.digest, why))
    kept.extend(t.tag for t in tags if is_fallback_tag(t.tag))
    if doomed and not kept and not (rule.allow_empty or allow_empty):
        return RepositoryPlan(
            repository, rule, kept=tuple(sorted(t.tag for t in candidates)),
            left_alone=f"rule {rule.pattern} would delete all {len(doomed)} tags (allow it with --allow-empty "
            "or allow_empty: true in the rule)",
        )
    return RepositoryPlan(repository, rule, tuple(doomed), tuple(sorted(kept)))


def _kept(
    repository: str, policy: Policy, rule: RetentionRule, facts: TagFacts, rank: Mapping[str, int], now: float,
    pushed_limit: float | None, pulled_limit: float | None,
) -> bool:
    if policy.immutable_rule(repository, facts.tag) is not None or facts.pushed is None:
        return True
    if rule.keep_last is not None and rank[facts.tag] < rule.keep_last:
        return True
    if any(glob_matches(glob, facts.tag) for glob in rule.keep_tags):
        return True
    if pushed_limit is not None and now - facts.pushed <= pushed_limit:
        return True
    return pulled_limit is not None and facts.pulled is not None and now - facts.pulled <= pulled_limit


def _why(
    rule: RetentionRule, facts: TagFacts, rank: Mapping[str, int], now: float,
    pushed_limit: float | None, pulled_limit: float | None,
) -> str:
    """Which rule decided, and why each of its clauses did not keep the tag."""
    assert facts.pushed is not None
    reasons = []
    if rule.keep_last is not None:
        reasons.append(f"not among the last {rule.keep_last} pushed (#{rank[facts.tag] + 1})")
    if rule.keep_tags:
        reasons.append(f"matches none of {', '.join(rule.keep_tags)}")
    if pushed_limit is not None:
        reasons.append(f"pushed {age_text(now - facts.pushed)} ago, not within {rule.pushed_within}")
    if pulled_limit is not None:
        last = "never pulled" if facts.pulled is None else f"pulled {age_text(now - facts.pulled)} ago"
        reasons.append(f"{last}, not within {rule.pulled_within}")
    return f"rule {rule.pattern}: {'; '.join(reasons)}"


# --- what a plan frees once collected ---


Blobs = Mapping[str, int]  # blob digest -> size


def blobs_of(digest: str, documents: Mapping[str, dict], sizes: Mapping[str, int], seen: set[str] | None = None) -> dict[str, int]:
    """Every blob ``digest`` holds: its own manifest, its config and layers, and those of the
    manifests an index lists, as far as ``documents`` (digest -> parsed manifest) knows them."""
    seen = set() if seen is None else seen
    if digest in seen:
        return {}
    seen.add(digest)
    found = {digest: sizes.get(digest, 0)}
    doc = documents.get(digest)
    if not isinstance(doc, dict):
        return found
    for entry in [doc.get("config"), *(doc.get("layers") or [])]:
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
            size = entry.get("size")
            found[entry["digest"]] = size if isinstance(size, int) and size >= 0 else 0
    for child in doc.get("manifests") or []:
        if isinstance(child, dict) and isinstance(child.get("digest"), str):
            found.update(blobs_of(child["digest"], documents, sizes, seen))
    return found


def attribute_bytes(
    plan: RepositoryPlan, kept_digests: Iterable[str], documents: Mapping[str, dict], sizes: Mapping[str, int]
) -> RepositoryPlan:
    """The plan with each doomed tag's bytes: the blobs of its image that no kept tag of the
    repository uses, each counted once (at the first doomed tag holding it). Blobs shared with
    another repository are counted too: the figure is what this repository stops holding."""
    held: set[str] = set()
    for digest in kept_digests:
        held |= set(blobs_of(digest, documents, sizes))
    doomed = []
    for item in plan.doomed:
        blobs = {blob: size for blob, size in blobs_of(item.digest, documents, sizes).items() if blob not in held}
        held |= set(blobs)
        doomed.append(Doomed(item.repository, item.tag, item.digest, item.why, sum(blobs.values())))
    return RepositoryPlan(plan.repository, plan.rule, tuple(doomed), plan.kept, plan.left_alone)


def line(item: Doomed) -> str:
    """One line of the dry run and of the real run: ``REPO:TAG``, the digest, why, the bytes."""
    return f"{item.repository}:{item.tag}  {item.digest[:19]}  {item.why}  ({item.freed} bytes freed once collected)"
