"""The shape of the package: arrows that only point down, and rooms a reader takes in at once.

The import graph of ``exporter/`` is read from the source with :mod:`ast` (every ``import`` and
``from ... import``, those under ``if TYPE_CHECKING:`` included: a type-only circle is still a
circle for the reader). No module may import one of its own layer or of a layer above it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"

# Top to bottom: a module imports only from the layers below its own. A new module takes its
# place here; the test below names any module of exporter/ missing from this list. Names are
# dotted paths under exporter/ (a package's __init__.py is the package's name).
LAYERS: tuple[tuple[str, ...], ...] = (
    # Entries: the exporter, and the demo sender (a client of the webhook, not part of the exporter).
    ("__main__", "demo"),
    # `twilio subscribe`: the Event Streams sink and subscriptions, from the subjects' event types.
    ("subscribe",),
    ("cli",),
    ("listener",),
    ("app",),
    # The doors and the /metrics handler.
    ("doors.webhook.handler", "doors.pull.poller", "doors.kinesis.consumer", "exposition"),
    ("keys",),
    ("runtime",),
    ("subjects.build",),
    # The steps of a delivery, and the transports the doors read through.
    (
        "doors.webhook.intake",
        "doors.webhook.verify",
        "doors.webhook.network",
        "doors.pull.api",
        "doors.kinesis.api",
        "pipeline",
        "state.durable",
        "webconfig",
    ),
    # The TaskRouter join, which the pipeline feeds and the durable state restores.
    ("join",),
    ("config",),
    # What is recorded: the one list of subjects.
    ("subjects",),
    ("state.store", "parse"),
    # A subject's families, names, buckets and plan; Twilio's thresholds, which they share.
    ("subjects.participant", "subjects.call", "subjects.conference"),
    ("record.recorder", "subjects.thresholds"),
    # Synthetic summaries for the demo, the bench and the tests: they use the models' type names.
    ("synthetic",),
    ("metrics", "record.labels", "dedup", "models", "logs", "doors", "values"),
    ("record.families", "reader", "subjects.common"),
    # The packages' own __init__ modules: a docstring each, nothing imported.
    ("__init__", "doors.webhook", "doors.pull", "doors.kinesis", "state", "record"),
)

# The packages the layout's rules speak of (issue text: docs/architecture in the README's map).
PACKAGES = ("subjects", "doors", "state", "record")
# Modules that keep their paths at the top of exporter/ (the layout's rules name them).
KEPT = (
    "__main__", "cli", "app", "listener", "config", "values", "runtime", "keys", "logs", "parse",
    "pipeline", "dedup", "join", "models", "exposition", "webconfig",
)  # fmt: skip

# Past this many lines a module says in its docstring why it is still one module.
MAX_LINES = 300
WHY_ONE_MODULE = re.compile(r"Why one module: \S[^.]{20,}\.")


def modules() -> dict[str, Path]:
    """Every module of exporter/ by its dotted name under the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def package_of(name: str) -> str | None:
    """The named package a module belongs to, or None for a module at the top of exporter/."""
    top = name.split(".")[0]
    return top if top in PACKAGES else None


def imports_of(name: str, path: Path) -> set[str]:
    """The modules of ``exporter`` that ``path`` imports (``__init__`` for the package itself)."""
    known = modules()
    own = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def resolve(dotted: str) -> str:
        parts = dotted.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) or "__init__"

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "exporter":
                    continue
                base = parts[1:]
            else:
                base = (own[: len(own) - node.level + 1] if node.level > 1 else own) + (node.module.split(".") if node.module else [])
            for alias in node.names:
                dotted = ".".join([*base, alias.name])
                found.add(dotted if dotted in known else resolve(".".join(base)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "exporter":
                    found.add(resolve(".".join(parts[1:])))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name, path) for name, path in modules().items()}


def reaches(start: str, wanted: Callable[[str], bool], edges: dict[str, set[str]]) -> list[str] | None:
    """A path from ``start`` to a module ``wanted`` holds, directly or through modules outside the named packages.

    >>> reaches("a", lambda m: m.startswith("record."), {"a": {"b"}, "b": {"record.x"}})
    ['a', 'b', 'record.x']
    >>> reaches("a", lambda m: m.startswith("record."), {"a": {"subjects"}, "subjects": {"record.x"}}) is None
    True
    """
    seen = {start}
    todo = [[start]]
    while todo:
        path = todo.pop()
        for target in sorted(edges.get(path[-1], ())):
            if wanted(target):
                return [*path, target]
            if target not in seen and package_of(target) is None:
                seen.add(target)
                todo.append([*path, target])
    return None


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
    keys.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from exporter.app import Runtime\n")
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
    for path in modules().values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if lines > MAX_LINES and not WHY_ONE_MODULE.search(" ".join(docstring.split())):
            unexplained.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
    assert unexplained == [], (
        f"modules over {MAX_LINES} lines whose docstring has no 'Why one module: <reason>.' sentence "
        "(split them, or say why they are one room):\n" + "\n".join(unexplained)
    )


def test_the_packages_are_exactly_the_layouts_and_the_kept_modules_keep_their_paths() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == set(PACKAGES)
    assert [name for name in KEPT if not (PACKAGE / f"{name}.py").exists()] == []


# The layout's rules: each holds directly and through any module outside the named packages.
# What would still break one, with the modules it goes through: nothing today.
KNOWN: dict[tuple[str, str], set[str]] = {}


def broken(starts: list[str], wanted: Callable[[str], bool], rule: tuple[str, str]) -> list[str]:
    edges = graph()
    found = []
    for start in starts:
        path = reaches(start, wanted, edges)
        if path is not None and not (set(path[1:-1]) & KNOWN.get(rule, set())):
            found.append(" -> ".join(path))
    return found


def in_package(package: str) -> Callable[[str], bool]:
    return lambda name: name == package or name.startswith(package + ".")


def test_the_recording_machinery_imports_no_subject_and_no_door() -> None:
    starts = [name for name in modules() if in_package("record")(name)]
    assert broken(starts, lambda n: in_package("subjects")(n) or in_package("doors")(n), ("record", "subjects")) == []


def test_a_subject_knows_no_door() -> None:
    starts = [name for name in modules() if in_package("subjects")(name)]
    assert broken(starts, in_package("doors"), ("subjects", "doors")) == []


def test_no_door_records_anything_itself() -> None:
    starts = [name for name in modules() if in_package("doors")(name)]
    assert broken(starts, in_package("record"), ("doors", "record")) == []


def test_the_models_the_state_the_config_and_the_values_reach_no_door_and_no_recording() -> None:
    assert broken(["models"], lambda n: in_package("doors")(n) or in_package("record")(n), ("models", "record")) == []
    starts = [name for name in modules() if in_package("state")(name)]
    assert broken(starts, in_package("record"), ("state", "record")) == []
    edges = graph()
    assert [(name, target) for name in ("config", "values") for target in edges[name] if in_package("doors")(target)] == []


def test_the_core_imports_no_entry() -> None:
    edges = graph()
    entries = {"__main__", "cli", "app", "listener"}
    assert {name: edges[name] & entries for name in ("parse", "pipeline", "dedup")} == {"parse": set(), "pipeline": set(), "dedup": set()}


def test_no_code_comment_cites_an_issue_number() -> None:
    # A reader of the repository cannot resolve "issue 18": a docstring gives the reason and points
    # at a page of docs/ instead. (docs/ and README.md are checked with the documentation.)
    cited = re.compile(r"\bissues? #?\d+|\bissue #\d+", re.IGNORECASE)
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for folder in (PACKAGE, PACKAGE.parent / "dashboards")
        for path in sorted(folder.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if cited.search(line)
    ]
    assert found == []
