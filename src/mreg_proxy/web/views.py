"""What the pages show, computed from manifests and configs: pure, no I/O, no aiohttp.

Everything here was written by whoever pushed the image, so every string is clipped to a budget
(the templates escape it) and every list is capped: a hostile config cannot make a page huge.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..spec.referrers_index import is_fallback_tag

INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
IMAGE_CONFIG_TYPES = frozenset({
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
})
MAX_TEXT = 300  # characters of one pushed string shown
MAX_ITEMS = 100  # labels, variables, layers, platforms, referrers shown
MAX_RAW = 32 * 1024  # characters of the raw manifest shown
ROW_PLATFORMS = 8  # platforms named in one tag row; the image page lists them all
PAGE_BYTES = 100_000  # no page is larger


@dataclass(frozen=True, slots=True)
class Budget:
    """How much of a pusher's strings an image page shows; escaping can make a character five
    bytes (``"`` is ``&#34;``), so the page is rendered again with a smaller budget when the
    first one comes out over PAGE_BYTES."""

    text: int
    items: int
    raw: int


BUDGETS = (Budget(MAX_TEXT, MAX_ITEMS, MAX_RAW), Budget(120, 30, 8 * 1024), Budget(40, 10, 1024))
_DIGITS = re.compile(r"(\d+)")


def clip(value: object, limit: int = MAX_TEXT) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "…"


def natural_key(tag: str) -> tuple[tuple[int, int, str], ...]:
    """Sorts 1.9 before 1.10: digit runs compare as numbers, the rest as text; numbers first."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(tag) if part)


def shown_tags(tags: list[str]) -> list[str]:
    """The tags a person looks for: referrers indexes are listed on their subject's page."""
    return [tag for tag in tags if not is_fallback_tag(tag)]


def short(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}:{hex_[:12]}" if hex_ else digest[:19]


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def platform_text(platform: object) -> str:
    p = _dict(platform)
    parts = [p.get("os"), p.get("architecture"), p.get("variant")]
    return clip("/".join(str(x) for x in parts if isinstance(x, str) and x), 40) or "?"


def is_index(manifest: dict[str, Any], media_type: str) -> bool:
    return media_type in INDEX_TYPES or manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest


def image_size(manifest: dict[str, Any]) -> int:
    """Compressed size: what a pull downloads (config and layers)."""
    return _int(_dict(manifest.get("config")).get("size")) + sum(
        _int(_dict(layer).get("size")) for layer in _list(manifest.get("layers"))
    )


def children(index: dict[str, Any]) -> list[dict[str, Any]]:
    """An index's platform manifests (attestation entries, with platform unknown/unknown, kept)."""
    return [d for d in _list(index.get("manifests")) if isinstance(d, dict) and isinstance(d.get("digest"), str)][:MAX_ITEMS]


def config_descriptor(manifest: dict[str, Any]) -> tuple[str, str] | None:
    """(digest, mediaType) of an image's config worth reading; None for artifacts."""
    config = _dict(manifest.get("config"))
    digest, media_type = config.get("digest"), config.get("mediaType")
    if isinstance(digest, str) and media_type in IMAGE_CONFIG_TYPES:
        return digest, media_type
    return None


@dataclass(frozen=True, slots=True)
class Platform:
    name: str
    size: int
    digest: str


@dataclass(slots=True)
class TagRow:
    tag: str
    digest: str
    kind: str  # image, index, artifact
    platforms: list[Platform] = field(default_factory=list)
    created: str = ""  # from the config, as pushed (ISO 8601)
    pushed: str = ""  # from the audit log, when mreg recorded the push (YYYY-MM-DDTHH:MM:SS, UTC)

    @property
    def newest_key(self) -> str:
        """Push time where known, else creation time; both UTC, compared to the second."""
        return self.pushed or self.created[:19]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.platforms)


def created_of(config: dict[str, Any] | None) -> str:
    value = _dict(config).get("created")
    return clip(value, 40) if isinstance(value, str) else ""


def sort_rows(rows: list[TagRow], order: str) -> list[TagRow]:
    """``newest``: newest push first (creation time where the push time is unknown; rows without
    either last), else by natural name."""
    by_name = sorted(rows, key=lambda row: natural_key(row.tag))
    if order != "newest":
        return by_name
    return sorted(by_name, key=lambda row: row.newest_key, reverse=True)


@dataclass(frozen=True, slots=True)
class Layer:
    digest: str
    size: int
    media_type: str
    history: str  # the history line that made it ("" when none)


@dataclass(slots=True)
class ImageView:
    labels: list[tuple[str, str]]
    env: list[str]
    entrypoint: str
    cmd: str
    ports: list[str]
    layers: list[Layer]
    empty_steps: list[str]  # history lines that made no layer (ENV, LABEL, CMD ...)
    created: str
    platform: str
    annotations: list[tuple[str, str]]


def annotations_of(doc: dict[str, Any], budget: Budget = BUDGETS[0]) -> list[tuple[str, str]]:
    return [(clip(k, budget.text), clip(v, budget.text)) for k, v in list(_dict(doc.get("annotations")).items())[:budget.items]]


def _command(value: object, limit: int) -> str:
    items = _list(value)
    return clip(json.dumps([x for x in items if isinstance(x, str)]), limit) if items else ""


def image_view(manifest: dict[str, Any], config: dict[str, Any] | None, budget: Budget = BUDGETS[0]) -> ImageView:
    conf = _dict(config)
    inner = _dict(conf.get("config"))
    text, items = budget.text, budget.items
    labels = [(clip(k, text), clip(v, text)) for k, v in list(_dict(inner.get("Labels")).items())[:items]]
    env = [clip(x, text) for x in _list(inner.get("Env"))[:items]]
    ports = [clip(p, text) for p in list(_dict(inner.get("ExposedPorts")))[:items]]
    history = [_dict(h) for h in _list(conf.get("history"))]
    layer_steps = [h.get("created_by", "") for h in history if not h.get("empty_layer")]
    empty_steps = [clip(h.get("created_by", ""), text) for h in history if h.get("empty_layer")][:items]
    layers = []
    for position, layer in enumerate(_list(manifest.get("layers"))[:items]):
        layer = _dict(layer)
        layers.append(Layer(
            clip(layer.get("digest", ""), 80), _int(layer.get("size")), clip(layer.get("mediaType", ""), text),
            clip(layer_steps[position], text) if position < len(layer_steps) else "",
        ))
    return ImageView(
        labels, env, _command(inner.get("Entrypoint"), text), _command(inner.get("Cmd"), text), ports, layers,
        empty_steps, created_of(conf), platform_text(conf), annotations_of(manifest, budget),
    )


@dataclass(frozen=True, slots=True)
class Referrer:
    artifact_type: str
    digest: str
    size: int
    annotations: list[tuple[str, str]]


def referrers_by_type(entries: list[dict[str, Any]], budget: Budget = BUDGETS[0]) -> list[tuple[str, list[Referrer]]]:
    """Signatures, SBOMs, attestations grouped by ``artifactType``, types in name order."""
    groups: dict[str, list[Referrer]] = {}
    few = Budget(budget.text, 5, budget.raw)  # a few annotations each
    for entry in entries[:budget.items]:
        digest = entry.get("digest")
        if not isinstance(digest, str):
            continue
        kind = clip(entry.get("artifactType") or "(no artifactType)", budget.text)
        groups.setdefault(kind, []).append(Referrer(kind, clip(digest, 80), _int(entry.get("size")), annotations_of(entry, few)))
    return sorted(groups.items())


def raw_text(body: bytes, limit: int = MAX_RAW) -> str:
    """The manifest as stored, pretty-printed when it is JSON, clipped to ``limit`` characters."""
    try:
        text = json.dumps(json.loads(body), indent=2)
    except ValueError:
        text = body.decode("utf-8", "replace")
    return clip(text, limit)
