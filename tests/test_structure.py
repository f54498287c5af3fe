"""The shape of the package: arrows that only point down, and rooms a reader takes in at once.

The import graph of ``exporter/`` is read from the source with :mod:`ast` (every ``import`` and
``from ... import``, those under ``if TYPE_CHECKING:`` included: a type-only circle is still a
circle for the reader). No module may import one of its own layer or of a layer above it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"

# Top to bottom: a module imports only from the layers below its own. A new module takes its
# place here; the test below names any module of exporter/ missing from this list.
LAYERS: tuple[tuple[str, ...], ...] = (
    # Entries: the exporter, and the demo sender (a client of the webhook, not part of the exporter).
    ("__main__", "demo"),
    # `twilio subscribe`: the Event Streams sink and subscriptions, from the subjects' event types.
    ("subscribe",),
    ("cli",),
    ("listener",),
    ("app",),
    # The doors and the /metrics handler.
    ("webhook", "pull", "kinesis", "exposition"),
    ("keys",),
    ("runtime",),
    # The steps of a delivery, and the transports the doors read through.
    ("intake", "verify", "network", "insights_api", "kinesis_api", "pipeline", "durable", "webconfig"),
    # The TaskRouter join, which the pipeline feeds and the durable state restores.
    ("join",),
    # What is recorded: one entry per kind of summary.
    ("subjects",),
    ("recorder", "state", "parse"),
    ("config",),
    # Synthetic summaries for the demo, the bench and the tests: they use the models' type names.
    ("synthetic",),
    ("metrics", "labels", "dedup", "models", "logs", "doors", "values"),
    ("families", "reader"),
    ("__init__",),
)

# Past this many lines a module says in its docstring why it is still one module.
MAX_LINES = 300
WHY_ONE_MODULE = re.compile(r"Why one module: \S[^.]{20,}\.")


def modules() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """The modules of ``exporter`` that ``path`` imports (``__init__`` for the package itself)."""
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "exporter":
                    continue
                target = parts[1] if len(parts) > 1 else None
            else:
                assert node.level == 1, f"{name}: relative import beyond the package"
                target = node.module.split(".")[0] if node.module else None
            if target is None:
                # ``from . import x``: x is a module, or a name of the package's __init__.
                found |= {alias.name if alias.name in known else "__init__" for alias in node.names}
            else:
                found.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "exporter":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name, path) for name, path in modules().items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``edges`` as a path that ends where it starts, or None.

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_import_graph_has_no_circle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "exporter/ imports in a circle: " + " -> ".join(cycle or ())


def test_the_cycle_finder_sees_a_circle_through_a_type_only_import(tmp_path: Path) -> None:
    # The circle this test was written against: app -> keys -> app, keys importing under TYPE_CHECKING.
    keys = tmp_path / "keys.py"
    keys.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .app import Runtime\n")
    assert imports_of("keys", keys) == {"app"}
    assert find_cycle({"app": {"keys"}, "keys": imports_of("keys", keys)}) == ["app", "keys", "app"]


def test_every_module_has_its_layer() -> None:
    layered = [name for layer in LAYERS for name in layer]
    assert len(layered) == len(set(layered)), "a module is listed twice in LAYERS"
    assert set(modules()) == set(layered), "add the module to LAYERS (tests/test_structure.py), below everything that imports it"


def test_every_import_points_down() -> None:
    layer_of = {name: depth for depth, layer in enumerate(LAYERS) for name in layer}
    upward = [
        f"{name} (layer {layer_of[name]}) imports {target} (layer {layer_of[target]})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if layer_of[target] <= layer_of[name]
    ]
    assert upward == [], "imports that do not point down:\n" + "\n".join(upward)


def test_a_long_module_says_why_it_is_one_module() -> None:
    unexplained = []
    for name, path in modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if lines > MAX_LINES and not WHY_ONE_MODULE.search(" ".join(docstring.split())):
            unexplained.append(f"{name}.py: {lines} lines")
    assert unexplained == [], (
        f"modules over {MAX_LINES} lines whose docstring has no 'Why one module: <reason>.' sentence "
        "(split them, or say why they are one room):\n" + "\n".join(unexplained)
    )
