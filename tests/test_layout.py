"""The package's layout is its architecture: imports run one way, the top level stays small.

docs/development.md draws the same map; this test keeps the two honest. Imports made for the type
checker only (under ``if TYPE_CHECKING:``) are left out: keys.py names the types of the objects it
keys without importing them at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mreg_proxy"

# What each part may import (besides itself). "bottom" is the floor everyone stands on.
BOTTOM = {"config", "errors", "escape", "files", "keys", "spec"}
MAY_IMPORT: dict[str, set[str]] = {
    "spec": set(),
    "config": set(),
    "escape": set(),
    "files": set(),
    "errors": {"spec"},
    "keys": set(),  # types only, under TYPE_CHECKING
    "transport": BOTTOM,
    "auth": BOTTOM | {"transport"},
    "storage": BOTTOM,
    "policy": BOTTOM | {"transport", "auth", "storage"},
    "oci": BOTTOM | {"transport", "auth", "storage", "policy"},
    "web": BOTTOM | {"transport", "auth", "storage", "policy", "oci"},
    "cli": BOTTOM | {"transport", "auth", "storage", "policy"},
    "app": BOTTOM | {"transport", "auth", "storage", "policy", "oci", "web"},
    "__main__": {"app"},
    "__init__": set(),
}
MAX_TOP_LEVEL_MODULES = 8  # __init__ and __main__ included


def part_of(module: str) -> str:
    return module.split(".")[0]


def runtime_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports at run time, as dotted names inside mreg_proxy."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    package = list(relative.parts[:-1])
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join([*base, node.module]))
            else:  # from . import a, b: the names are modules
                found.update(".".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mreg_proxy."):
            found.add(node.module.removeprefix("mreg_proxy."))  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("mreg_proxy.") for a in node.names if a.name.startswith("mreg_proxy."))
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_on_the_map() -> None:
    parts = {part_of(".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in sources()}
    assert parts <= set(MAY_IMPORT), f"not on the map (add to MAY_IMPORT and docs/development.md): {parts - set(MAY_IMPORT)}"


def test_imports_run_one_way() -> None:
    wrong = []
    for path in sources():
        here = part_of(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for target in runtime_imports(path):
            there = part_of(target)
            if there != here and there not in MAY_IMPORT[here]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target} ({here} may not import {there})")
    assert not wrong, "\n".join(wrong)


def test_the_top_level_holds_few_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top level: {top}"


def test_the_clis_do_not_load_the_server() -> None:
    """The CLIs run inside the auth container on each operator command: no aiohttp server code."""
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for target in runtime_imports(path):
            assert part_of(target) not in {"oci", "web", "app"}, f"{path.name} imports {target}"
