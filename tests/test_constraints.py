"""constraints.txt pins everything the image and the tests install, so two installs are the same."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
            assert match, f"constraints.txt: not an exact pin: {line!r}"
            found[canonicalize_name(match[1])] = match[2]
    return found


def needed(name: str, extras: frozenset[str] = frozenset(), seen: set[str] | None = None) -> set[str]:
    """``name`` and everything it requires (with ``extras``), as installed here."""
    seen = set() if seen is None else seen
    for requirement in metadata.requires(name) or []:
        req = Requirement(requirement)
        if req.marker is not None and not any(req.marker.evaluate({"extra": extra}) for extra in (extras or {""})):
            continue
        dependency = canonicalize_name(req.name)
        if dependency not in seen:
            seen.add(dependency)
            needed(dependency, frozenset(req.extras), seen)
    return seen


def test_every_package_the_exporter_and_its_tests_need_is_pinned_and_installed_at_that_version():
    pinned = pins()
    missing = sorted(needed("twilio-insights-exporter", frozenset({"test"})) - set(pinned))
    assert not missing, f"not pinned in constraints.txt: {missing}; run make constraints"
    assert "setuptools" in pinned, "the image's build backend must be pinned too"
    for name in needed("twilio-insights-exporter", frozenset({"test"})):
        assert metadata.version(name) == pinned[name], (
            f"{name} {metadata.version(name)} installed, constraints.txt says {pinned[name]}: run make test-deps"
        )
