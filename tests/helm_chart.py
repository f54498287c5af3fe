"""Render the Helm chart offline with the real Helm v4 (helm-python-sdk) for the chart tests.

helm-python-sdk binds Helm's Go SDK compiled into a shared library shipped inside its wheel
(``helm_python/lib/libhelm_c.so``): no helm binary, no download at run time, no cluster.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / "helm" / "twilio-insights-exporter"
RELEASE = "tie"
NAMESPACE = "monitoring"
FULLNAME = f"{RELEASE}-twilio-insights-exporter"
# A recent Kubernetes release that kubernetes-validate ships schemas for, used for lint and schemas.
KUBE_VERSION = "1.35.0"

# Helm logs each followed symlink (files/rules, files/dashboards) at INFO; the tests read the result.
helm.disable_logging()


# Profiles the chart ships beside values.yaml, for `helm install -f <file>`: scenarios too.
PROFILES = {"flex": CHART_DIR / "values-flex.yaml"}


def scenario_names() -> list[str]:
    """ "default" (the chart's own values), every ``ci/*-values.yaml`` scenario and every profile the chart ships."""
    return ["default", *sorted(p.name.removesuffix("-values.yaml") for p in (CHART_DIR / "ci").glob("*-values.yaml")), *PROFILES]


def scenario_values(name: str) -> dict[str, Any] | None:
    if name == "default":
        return None
    path = PROFILES.get(name, CHART_DIR / "ci" / f"{name}-values.yaml")
    values: dict[str, Any] = yaml.safe_load(path.read_text())
    return values


def sizing() -> ModuleType:
    """helm/sizing.py, where the chart's resources come from (helm/ is not a package)."""
    if "sizing" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sizing", ROOT / "helm" / "sizing.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["sizing"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["sizing"]


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


@dataclass(frozen=True)
class Manifest:
    template: str  # e.g. "templates/deployment.yaml"
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]


@dataclass(frozen=True)
class Rendering:
    manifests: list[Manifest]
    notes: str

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind]

    def one(self, kind: str) -> dict[str, Any]:
        """The single manifest of ``kind``; fails when there are none or several."""
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {[m.name for m in found]}"
        return found[0].doc

    def rule_groups(self) -> list[dict[str, Any]]:
        """The rule groups of every PrometheusRule, in rendering order (one group an object)."""
        return [group for rule in self.of_kind("PrometheusRule") for group in rule.doc["spec"]["groups"]]

    def kinds(self) -> list[str]:
        return sorted(m.kind for m in self.manifests)

    def deployment_container(self) -> dict[str, Any]:
        (container,) = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        return container


def render(values: dict[str, Any] | None = None) -> Rendering:
    """Render as ``helm install tie --namespace monitoring`` would, without a cluster."""
    rendered = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[Manifest] = []
    notes = ""
    for path, text in sorted(rendered.items()):
        template = path.removeprefix(f"{CHART_DIR.name}/")
        if template == "templates/NOTES.txt":
            notes = text
            continue
        manifests.extend(Manifest(template, doc) for doc in yaml.safe_load_all(text) if doc)
    return Rendering(manifests, notes)


@functools.cache
def render_scenario(name: str) -> Rendering:
    return render(scenario_values(name))


def container_args(container: dict[str, Any]) -> dict[str, str | None]:
    """``--flag=value`` arguments as a mapping (``None`` for a bare ``--flag``)."""
    parsed: dict[str, str | None] = {}
    for arg in container["args"]:
        flag, sep, value = arg.partition("=")
        assert flag not in parsed, f"{flag} passed twice"
        parsed[flag] = value if sep else None
    return parsed
