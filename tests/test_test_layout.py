"""The tests' own layout: no module under tests/ imports a test module.

A test module is what pytest collects (``test_*.py``); what several of them share lives in
tests/conftest.py, tests/helpers.py or a helper module of its topic (tests/raw_http.py,
tests/pull_rig.py, ...). Importing a test module runs its module-level code and, for a fixture,
makes it a second, silently shared definition.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def is_test_module(dotted: str) -> bool:
    """``tests.test_x`` (or ``.test_x``, relative to tests/) names a test module.

    >>> is_test_module("tests.test_pull"), is_test_module(".test_pull"), is_test_module("tests.helpers")
    (True, True, False)
    >>> is_test_module("tests.test_pull.Rig"), is_test_module("test_results")
    (True, False)
    """
    parts = dotted.split(".")
    if parts[0] == "":  # relative to tests/
        parts = ["tests", *parts[1:]]
    return len(parts) >= 2 and parts[0] == "tests" and parts[1].startswith("test_")


def imported_test_modules(source: str) -> list[str]:
    """Every test module ``source`` imports, in any form an import statement can take.

    >>> imported_test_modules("import tests.test_a\\nfrom tests.test_b import x\\nfrom tests import test_c, helpers\\nfrom .test_d import y")
    ['tests.test_a', 'tests.test_b', 'tests.test_c', '.test_d']
    >>> imported_test_modules("from . import test_e\\nfrom tests.helpers import until\\nimport pytest")
    ['.test_e']
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if is_test_module(base):
                found.append(base)
            elif base in ("tests", "."):
                found += [f"{base.rstrip('.')}.{alias.name}" for alias in node.names if alias.name.startswith("test_")]
    return found


def python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "node_modules" not in path.parts)


def test_the_scan_reads_every_python_module_under_tests() -> None:
    names = {path.name for path in python_files()}

    assert {"conftest.py", "helpers.py", "test_test_layout.py", "test_pull.py"} <= names


def test_no_module_under_tests_imports_a_test_module() -> None:
    offenders = {str(path.relative_to(TESTS.parent)): imported for path in python_files() if (imported := imported_test_modules(path.read_text()))}

    assert offenders == {}, "move what these import into tests/helpers.py, tests/conftest.py or a helper module of its topic"
