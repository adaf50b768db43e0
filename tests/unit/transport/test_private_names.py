"""Only transport/aiohttp_private.py may touch aiohttp's private names (a new aiohttp can then
break that module alone, and its tests say which name changed).

The scan (ast) flags, in every module of src/mreg_proxy but the adapter:
- ``self._name`` in a class derived from an aiohttp class, when ``_name`` is an attribute of that
  aiohttp class (reading it, or shadowing it with our own) or is not one our own classes define;
- ``anything._name`` not on ``self``/``cls`` (our own private names are used only on self here),
  unless ``anything`` is a non-aiohttp module the file imports (``ssl._create_unverified_context``);
- ``getattr``/``setattr``/``hasattr``/``delattr`` with a private name as a constant.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import textwrap
import types
from pathlib import Path

import pytest

import mreg_proxy

ADAPTER = "mreg_proxy.transport.aiohttp_private"
DYNAMIC = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _aiohttp_bases(cls: type) -> list[type]:
    return [c for c in cls.__mro__ if c.__module__.partition(".")[0] == "aiohttp"]


def _defined_by(node: ast.ClassDef) -> set[str]:
    """Names a class body defines: methods, class attributes, and ``self.x = ...`` targets."""
    names: set[str] = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(item.name)
        elif isinstance(item, (ast.Assign, ast.AnnAssign)):
            targets = item.targets if isinstance(item, ast.Assign) else [item.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    for sub in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = sub.targets
        elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
            targets = [sub.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                names.add(target.attr)
    return names


def _ours(cls: type, module: str, local: dict[str, ast.ClassDef]) -> set[str]:
    """Names our own classes in ``cls``'s MRO define (those not from aiohttp nor builtins)."""
    names: set[str] = set()
    for c in cls.__mro__:
        if c.__module__.partition(".")[0] in ("aiohttp", "builtins", "abc", "asyncio"):
            continue
        if c.__module__ == module and c.__name__ in local:
            names |= _defined_by(local[c.__name__])
        else:
            tree = ast.parse(textwrap.dedent(inspect.getsource(c)))
            names |= _defined_by(next(n for n in tree.body if isinstance(n, ast.ClassDef)))
    return names


def violations(source: str, namespace: dict[str, object], module: str) -> list[str]:
    """Accesses to aiohttp's private names in ``source``; ``namespace``: the module's globals
    (its classes and imported modules), ``module``: its name."""
    tree = ast.parse(source)
    local = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    modules = {
        name for name, value in namespace.items()
        if isinstance(value, types.ModuleType) and value.__name__.partition(".")[0] != "aiohttp"
    }
    found: list[str] = []

    def visit(node: ast.AST, cls: type | None) -> None:
        if isinstance(node, ast.ClassDef):
            value = namespace.get(node.name) if node.name in local and local[node.name] is node else None
            cls = value if isinstance(value, type) and _aiohttp_bases(value) else None
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls") or (
                isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "super"
            )
            where = f"{module}:{node.lineno} .{node.attr}"
            if on_self:
                if cls is not None:
                    aiohttp_owner = next((b for b in _aiohttp_bases(cls) if hasattr(b, node.attr)), None)
                    if aiohttp_owner is not None:
                        found.append(f"{where}: a private name of aiohttp's {aiohttp_owner.__qualname__}")
                    elif node.attr not in _ours(cls, module, local):
                        found.append(f"{where}: not defined by {cls.__qualname__}, so aiohttp's")
            elif not (isinstance(node.value, ast.Name) and node.value.id in modules):
                found.append(f"{where}: a private name on an object that is not self")
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str) and _private(node.args[1].value)
        ):
            found.append(f"{module}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
        for child in ast.iter_child_nodes(node):
            visit(child, cls)

    visit(tree, None)
    return found


def _modules() -> list[str]:
    return [
        info.name for info in pkgutil.walk_packages(mreg_proxy.__path__, "mreg_proxy.")
        if info.name != ADAPTER
    ]


def test_no_module_but_the_adapter_touches_aiohttp_private_names() -> None:
    found: list[str] = []
    modules = _modules()
    assert len(modules) > 30 and "mreg_proxy.transport.connection" in modules
    for name in modules:
        if name.endswith(".__main__"):  # importing it runs the program: scanned without its globals
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None
            found += violations(Path(spec.origin).read_text(), {}, name)
            continue
        module = importlib.import_module(name)
        assert module.__file__ is not None
        found += violations(Path(module.__file__).read_text(), vars(module), name)
    assert not found, (
        "only mreg_proxy/transport/aiohttp_private.py may touch aiohttp's private names "
        "(add a function there, and its test in test_aiohttp_private.py):\n" + "\n".join(found)
    )


# The scan itself: what it must flag, and what it must let through

FLAGGED = '''
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

class Handler(RequestHandler):
    def __init__(self, *args):
        super().__init__(*args)
        self._mine = 0
        self._waiter = None  # shadows aiohttp's own

    def idle(self):
        return self._current_request is None and self._mine == 0

    def other(self, server, payload):
        return server._kwargs, payload._size, getattr(payload, "_size"), super()._messages
'''


def _scan(source: str) -> list[str]:
    namespace: dict[str, object] = {"__name__": "scanned"}
    exec(compile(source, "scanned", "exec"), namespace)  # noqa: S102 - the fixed sources above
    return violations(source, namespace, "scanned")


def test_the_scan_flags_aiohttp_private_names_read_or_shadowed() -> None:
    found = _scan(FLAGGED)
    expected = ["._waiter", "._current_request", "._kwargs", "._size", "getattr(..., '_size')", "._messages"]
    for what in expected:
        assert any(what in line for line in found), f"{what} not flagged: {found}"
    assert not any("._mine" in line for line in found), found
    assert len(found) == len(expected), found


ALLOWED = '''
import ssl
from aiohttp import web

class Site(web.BaseSite):
    def __init__(self, runner):
        super().__init__(runner)
        self._own_runner = runner

    @property
    def name(self):
        return "x"

    async def start(self):
        return self._own_runner.server, self._helper()

    def _helper(self):
        return ssl._create_default_https_context

class Plain:
    def __init__(self):
        self._x = 1

    def get(self):
        return self._x
'''


def test_the_scan_lets_our_own_private_names_through() -> None:
    assert _scan(ALLOWED) == []


@pytest.mark.parametrize("line", ["return self._runner", "return self._backlog"])
def test_the_scan_flags_a_base_site_private_slot(line: str) -> None:
    source = ALLOWED.replace("return self._own_runner.server, self._helper()", line)
    assert len(_scan(source)) == 1, _scan(source)
