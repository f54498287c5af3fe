"""The Dockerfile, read statically (no container engine here): what the issue and the chart need of it."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from exporter.config import WebhookSettings, WebSettings

ROOT = Path(__file__).resolve().parent.parent
CHART_VALUES = yaml.safe_load((ROOT / "helm" / "twilio-insights-exporter" / "values.yaml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its instructions (continuations joined)."""
    joined = re.sub(r"\\\n", " ", text)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile((ROOT / "Dockerfile").read_text())
FINAL = STAGES[-1]


def port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_the_build_is_multi_stage_on_one_slim_python_that_the_package_supports():
    assert [stage.base for stage in STAGES] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert STAGES[0].name == "build"
    image = GLOBAL_ARGS["PYTHON_IMAGE"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
    assert match, image
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert (int(match[1]), int(match[2])) >= (3, 11)


def test_the_final_stage_copies_only_the_virtualenv_and_installs_nothing():
    assert FINAL.all("COPY") == ["--from=build /opt/venv /opt/venv"]
    runs = " ".join(FINAL.all("RUN"))
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install"):
        assert tool not in runs
    # pip itself is removed from the base image and from the virtualenv.
    assert "python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel" in runs
    assert "/opt/venv/bin/pip uninstall --yes pip setuptools wheel" in " ".join(STAGES[0].all("RUN"))


def test_the_image_runs_as_the_numeric_non_root_user_the_chart_expects():
    (user,) = FINAL.all("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and int(gid) != 0
    for context in (CHART_VALUES["podSecurityContext"], CHART_VALUES["securityContext"]):
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    assert f"--uid {uid} --gid {gid}" in " ".join(FINAL.all("RUN"))


def test_the_entrypoint_is_the_console_script_in_exec_form():
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    assert entrypoint == '["twilio-insights-exporter"]'
    assert PYPROJECT["project"]["scripts"] == {"twilio-insights-exporter": "exporter.__main__:main"}
    env = " ".join(FINAL.all("ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env


def test_both_ports_are_exposed_and_agree_with_the_exporter_and_the_chart():
    (exposed,) = FINAL.all("EXPOSE")
    metrics, webhook = port(WebSettings().listen_address), port(WebhookSettings().listen_address)
    assert exposed.split() == [str(metrics), str(webhook)]
    assert (CHART_VALUES["metrics"]["port"], CHART_VALUES["webhook"]["port"]) == (metrics, webhook)


def test_python_writes_no_bytecode_so_a_read_only_root_filesystem_works():
    env = dict(item.split("=", 1) for args in FINAL.all("ENV") for item in shlex.split(args))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


# --- the build context ------------------------------------------------------------------------


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def matches(pattern: str, candidate: str) -> bool:
        regex = "".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?)", pattern.strip("/"))
        )
        return re.fullmatch(regex, candidate) is not None

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(matches(pattern.removeprefix("!"), prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_the_build_context_is_the_package_sources_and_nothing_else():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    # The files of a checkout (tracked, or new and not ignored): what `docker build .` would see,
    # without walking a local .venv.
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = [f for f in listed.stdout.splitlines() if (ROOT / f).is_file()]
    context = {f for f in files if not dockerignore_excludes(patterns, f)}
    package = {f for f in files if f.startswith("exporter/") and "__pycache__" not in f}
    assert context == {"pyproject.toml", PYPROJECT["project"]["readme"]} | package
    # ... which is exactly what the build stage copies, and all that setuptools reads.
    assert STAGES[0].all("COPY") == ["pyproject.toml README.md ./", "exporter/ ./exporter/"]
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["exporter*"]


def test_the_dockerignore_matcher_follows_dockers_last_match_rule():
    patterns = ["*", "!exporter/", "**/__pycache__"]
    assert dockerignore_excludes(patterns, "tests/test_x.py")
    assert not dockerignore_excludes(patterns, "exporter/app.py")
    assert dockerignore_excludes(patterns, "exporter/__pycache__/app.cpython-312.pyc")
