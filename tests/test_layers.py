"""relay's layers, checked on its source: the folders say what each module may import.

The rules (README, "Development"), stated about folders only:

- Layers, bottom up: the foundation (``relay/errors.py`` and ``config/``),
  ``core/`` (routing), ``links/`` (node-to-node decisions), ``process/`` (the
  process around a node), the edge packages (``listeners/``, ``peering/``,
  ``broker/``, ``cluster_status/``, ``observe/``, ``workers/``), ``node/``,
  ``cli/``. A module imports only from its own layer or below; an edge
  package imports no other edge package.
- The pure folders (``config/``, ``core/``, ``links/`` and an edge's
  ``verdicts/``) import no asyncio, aiohttp, aiomysql, uvloop, nor
  websockets' asyncio layer.
- No import cycle between relay's modules.

Every import counts: at the top, inside functions, and under
``if TYPE_CHECKING:`` (a cycle hidden there is still a cycle of the design).
The checks run on a synthetic package too, so they are known to fail.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parent.parent / "relay"

#: relay's folders (and top-level modules) bottom up: a folder's rank is its index.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "errors", "config"}),
    frozenset({"core"}),
    frozenset({"links"}),
    frozenset({"process"}),
    frozenset({"listeners", "peering", "broker", "cluster_status", "observe", "workers"}),
    frozenset({"node"}),
    frozenset({"cli", "__main__"}),
)
#: The rank of the edge packages, which may not import one another.
EDGE_RANK = 4
#: Folders with no I/O: the bottom three layers, and an edge package's ``verdicts/``.
PURE_FOLDERS = frozenset({"config", "core", "links"})
PURE_SUBFOLDER = "verdicts"
#: What a pure module must not import (a name or any module below it).
IO_LIBRARIES = ("asyncio", "aiohttp", "aiomysql", "uvloop", "websockets.asyncio")
#: websockets' other event-loop layers; its bare top level hands out the asyncio API lazily.
IO_LIBRARIES_EXACT = ("websockets",)
IO_LIBRARIES_ALSO = ("websockets.legacy", "websockets.sync")


@dataclass(frozen=True)
class Layer:
    """Where a module stands: its rank (0 is the bottom) and its folder."""

    rank: int
    group: str


def layer_of(module: str) -> Layer:
    """The layer of one of relay's modules, from its folder; one off every layer is an error."""
    parts = module.split(".")
    folder = parts[1] if len(parts) > 1 else "__init__"
    for rank, folders in enumerate(LAYERS):
        if folder in folders:
            return Layer(rank, folder)
    raise AssertionError(f"{module} stands on no layer: place its folder in {__file__}")


def is_pure(module: str) -> bool:
    """Whether ``module`` must do without the event loop and network libraries."""
    parts = module.split(".")
    return (
        (len(parts) > 1 and parts[1] in PURE_FOLDERS)
        or PURE_SUBFOLDER in parts[2:-1]
        or (len(parts) > 2 and parts[-1] == PURE_SUBFOLDER)
    )


@dataclass(frozen=True)
class Import:
    """One import statement's target, as written in ``module`` at ``line``."""

    module: str
    target: str
    line: int


def modules_under(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    """Every import in the file, wherever it stands; relative ones made absolute.

    ``from package import name`` names the module ``package.name`` when there
    is one, otherwise the package.
    """
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield Import(module, full if full in known else base, node.lineno)


def relay_module(target: str, known: set[str]) -> str | None:
    """The relay module an import target loads (its nearest known parent), if any."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def layer_violations(root: Path) -> list[str]:
    """Imports that go up a layer, across edge packages, or from a pure module to I/O."""
    modules = modules_under(root)
    known = set(modules)
    problems = []
    for module, path in modules.items():
        mine = layer_of(module)
        for imp in imports_of(module, path, known):
            where = f"{path.relative_to(root.parent)}:{imp.line}: {module} imports {imp.target}"
            target = relay_module(imp.target, known)
            if target is None:
                if is_pure(module) and _is_io_library(imp.target):
                    problems.append(f"{where}, an I/O library, in a pure module")
                continue
            theirs = layer_of(target)
            if theirs.rank > mine.rank:
                problems.append(f"{where}, up from {mine.group} to {theirs.group}")
            elif theirs.rank == mine.rank == EDGE_RANK and theirs.group != mine.group:
                problems.append(f"{where}, across edges ({mine.group} -> {theirs.group})")
    return sorted(problems)


def _is_io_library(target: str) -> bool:
    if target in IO_LIBRARIES_EXACT:
        return True
    return any(
        target == name or target.startswith(name + ".")
        for name in (*IO_LIBRARIES, *IO_LIBRARIES_ALSO)
    )


def import_cycles(root: Path) -> list[list[str]]:
    """The sets of modules that import each other, directly or round a loop."""
    modules = modules_under(root)
    known = set(modules)
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for imp in imports_of(module, path, known):
            target = relay_module(imp.target, known)
            if target is not None and target != module:
                graph[module].add(target)
    return [sorted(group) for group in _strongly_connected(graph) if len(group) > 1]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (a deep package must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(group)
    return groups


# relay itself.


def test_every_module_stands_on_a_layer() -> None:
    modules = modules_under(RELAY)
    for module in modules:
        layer_of(module)
    # Each folder the rules name exists: a renamed folder must be renamed here too.
    folders = {module.split(".")[1] for module in modules if "." in module}
    assert set().union(*LAYERS) - {"__init__"} <= folders | {"errors", "__main__"}
    assert any(PURE_SUBFOLDER in module.split(".") for module in modules)


def test_no_module_imports_up_or_across_the_layers() -> None:
    assert layer_violations(RELAY) == []


def test_no_import_cycles() -> None:
    assert import_cycles(RELAY) == []


def test_the_pure_modules_load_no_event_loop_or_network_library() -> None:
    """What the source says, checked on what Python actually loads (third-party imports too)."""
    pure = sorted(module for module in modules_under(RELAY) if is_pure(module))
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {pure!r}:
            importlib.import_module(name)
        loaded = [m for m in sys.modules if m.split(".")[0] in {IO_LIBRARIES[:4]!r}
                  or m.startswith(("websockets.asyncio", "websockets.legacy", "websockets.sync"))]
        print(" ".join(sorted(loaded)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == []


def test_relay_config_imports_without_the_mysql_driver() -> None:
    """``import relay.config`` works where aiomysql is not installed."""
    script = textwrap.dedent(
        """
        import sys

        class NoMySQL:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "aiomysql":
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoMySQL())
        import relay.config
        print(relay.config.load_config.__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "load_config"


# The checks themselves, on a package built to break the rules.


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / "relay" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root / "relay"


def test_the_checks_find_imports_up_the_layers_even_under_type_checking(tmp_path: Path) -> None:
    relay = _package(
        tmp_path,
        {
            "__init__.py": "",
            "node.py": "from relay.observe import metrics\n",
            "observe/__init__.py": "",
            "observe/metrics.py": """\
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from relay.node import Node
            """,
            "core/__init__.py": "",
            "core/hub.py": "from ..listeners.browser import BrowserConnection\n",
            "listeners/__init__.py": "",
            "listeners/browser.py": "from relay.peering import peers\n",
            "peering/__init__.py": "",
            "peering/peers.py": "",
        },
    )
    assert layer_violations(relay) == [
        "relay/core/hub.py:1: relay.core.hub imports relay.listeners.browser, "
        "up from core to listeners",
        "relay/listeners/browser.py:1: relay.listeners.browser imports relay.peering.peers, "
        "across edges (listeners -> peering)",
        "relay/observe/metrics.py:3: relay.observe.metrics imports relay.node, "
        "up from observe to node",
    ]
    assert import_cycles(relay) == [["relay.node", "relay.observe.metrics"]]


def test_the_checks_find_io_in_a_pure_module(tmp_path: Path) -> None:
    relay = _package(
        tmp_path,
        {
            "__init__.py": "",
            "config.py": "import aiohttp.web\n",
            "core/__init__.py": "",
            "core/hub.py": """\
                import asyncio
                from websockets.frames import Frame
                def later():
                    from websockets.asyncio.server import serve
            """,
            "core/dedup.py": "from websockets import connect\nimport aiomysql\n",
            "cluster_status/__init__.py": "",
            "cluster_status/driver.py": "import aiomysql\n",
            "cluster_status/verdicts/__init__.py": "",
            "cluster_status/verdicts/health.py": "import asyncio\n",
            "links/__init__.py": "",
            "links/outbox.py": "from relay.core import hub\n",
        },
    )
    assert layer_violations(relay) == [
        "relay/cluster_status/verdicts/health.py:1: relay.cluster_status.verdicts.health "
        "imports asyncio, an I/O library, in a pure module",
        "relay/config.py:1: relay.config imports aiohttp.web, an I/O library, in a pure module",
        "relay/core/dedup.py:1: relay.core.dedup imports websockets, an I/O library, "
        "in a pure module",
        "relay/core/dedup.py:2: relay.core.dedup imports aiomysql, an I/O library, "
        "in a pure module",
        "relay/core/hub.py:1: relay.core.hub imports asyncio, an I/O library, in a pure module",
        "relay/core/hub.py:4: relay.core.hub imports websockets.asyncio.server, "
        "an I/O library, in a pure module",
    ]


def test_a_module_off_every_layer_is_an_error(tmp_path: Path) -> None:
    relay = _package(tmp_path, {"__init__.py": "", "misc/__init__.py": "", "misc/x.py": ""})
    with pytest.raises(AssertionError, match=r"relay\.misc stands on no layer"):
        layer_violations(relay)
