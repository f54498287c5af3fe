"""Build the image and package the chart of a release, then push both to one OCI registry.

    make release REGISTRY=registry.example.com/monitoring [PLATFORMS=linux/amd64,linux/arm64] [PLAIN_HTTP=1]

The image goes to ``REGISTRY/twilio-insights-exporter:<version>`` and the chart to
``oci://REGISTRY/charts/twilio-insights-exporter`` at the chart's version. The exporter's version is
written once, in pyproject.toml: the chart's appVersion and the Dockerfile's default VERSION must
agree with it, and a version already in the registry is never pushed again. The procedure and what a
machine needs to build several architectures: docs/release.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
NAME = "twilio-insights-exporter"
CHART_DIR = ROOT / "helm" / NAME
# The architectures of Kubernetes nodes a release is built for when the machine can build them: its
# own always, another when the kernel runs that architecture's programs through QEMU (binfmt_misc).
RELEASE_ARCHES = ("amd64", "arm64")
QEMU_NAMES = {"amd64": "x86_64", "arm64": "aarch64"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
CA_IN_BUILD = "/run/host-ca.crt"


class ReleaseError(Exception):
    """Something the person releasing must fix; the message says what."""


@dataclass(frozen=True)
class Versions:
    app: str  # pyproject.toml's version: the image's tag and the chart's appVersion
    chart: str  # Chart.yaml's version, bumped on every change to the chart


def read_versions(root: Path = ROOT) -> Versions:
    """The versions of a release, refused when a copy of the exporter's version disagrees with pyproject.toml."""
    app = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    chart_yaml = root / "helm" / NAME / "Chart.yaml"
    chart = yaml.safe_load(chart_yaml.read_text())
    dockerfile = re.search(r"^ARG VERSION=(\S+)$", (root / "Dockerfile").read_text(), re.MULTILINE)
    copies = {
        f"{chart_yaml.relative_to(root)} appVersion": str(chart["appVersion"]),
        "Dockerfile's ARG VERSION": dockerfile.group(1) if dockerfile else "(missing)",
    }
    for where, version in copies.items():
        if version != app:
            raise ReleaseError(f"{where} is {version} but pyproject.toml's version is {app}: set it to {app}")
    return Versions(app=app, chart=str(chart["version"]))


def buildable_arches(native: str, binfmt: Path = BINFMT) -> list[str]:
    """The release architectures this machine builds: its own, and those QEMU runs through binfmt_misc."""
    return [arch for arch in RELEASE_ARCHES if arch == native or _emulated(binfmt / f"qemu-{QEMU_NAMES[arch]}")]


def _emulated(entry: Path) -> bool:
    try:
        return entry.read_text().splitlines()[0] == "enabled"
    except (OSError, IndexError):
        return False


def choose_platforms(requested: str | None, native: str, binfmt: Path = BINFMT) -> list[str]:
    """The ``linux/<arch>`` platforms to build: those requested, each of which must be buildable here,
    or every release architecture this machine can build."""
    buildable = [f"linux/{arch}" for arch in buildable_arches(native, binfmt)]
    if not requested:
        return buildable
    platforms = [p.strip() for p in requested.split(",") if p.strip()]
    for platform in platforms:
        if platform not in buildable:
            raise ReleaseError(
                f"{platform} cannot be built on this machine (it builds {', '.join(buildable)}): another architecture needs QEMU "
                "registered in binfmt_misc, e.g. apt-get install qemu-user-static (docs/release.md)"
            )
    return platforms


def published_versions(reference: str, *, plain_http: bool) -> list[str]:
    """The semver tags of an ``oci://`` repository; none when the registry does not know it yet.

    The Helm SDK lists the tags of the image's repository as well as the chart's: an OCI tag list
    is the same call for both, and the registry credentials are the ones the chart push needs.
    """
    try:
        return helm.RegistryClient(plain_http=plain_http).tags(reference)
    except helm.HelmRegistryError as error:
        if "response status code 404" in str(error):
            return []
        raise ReleaseError(f"cannot list the tags of {reference}: {error}") from None


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    print("+ podman", " ".join(args), flush=True)
    result = subprocess.run(["podman", *args], text=True)
    if result.returncode != 0:
        raise ReleaseError(f"podman {args[0]} exited with {result.returncode}")
    return result


def native_arch() -> str:
    try:
        return subprocess.run(["podman", "info", "--format", "{{.Host.Arch}}"], capture_output=True, text=True, check=True).stdout.strip()
    except FileNotFoundError:
        raise ReleaseError("podman builds and pushes the image: apt-get install podman") from None
    except subprocess.CalledProcessError as error:
        raise ReleaseError(f"podman info failed: {error.stderr.strip()}") from None


def registry_path(registry: str) -> str:
    """``host[:port][/path]`` as given, without an ``oci://`` prefix or trailing slash."""
    path = registry.removeprefix("oci://").rstrip("/")
    if not path or "://" in path:
        raise ReleaseError(f"REGISTRY must be host[:port][/path], e.g. registry.example.com/monitoring, not {registry!r}")
    return path


def release(
    registry: str, *, platforms: str | None = None, python_image: str | None = None, ca_bundle: str | None = None, plain_http: bool = False
) -> None:
    registry = registry_path(registry)
    versions = read_versions()
    image = f"{registry}/{NAME}"
    chart_repository = f"oci://{registry}/charts"
    chart = f"{chart_repository}/{NAME}"
    if versions.app in published_versions(f"oci://{image}", plain_http=plain_http):
        raise ReleaseError(f"{image}:{versions.app} is already published: bump the version in pyproject.toml (and the chart's appVersion)")
    if versions.chart in published_versions(chart, plain_http=plain_http):
        raise ReleaseError(f"{chart}:{versions.chart} is already published: bump the version in {CHART_DIR.relative_to(ROOT)}/Chart.yaml")
    chosen = choose_platforms(platforms, native_arch())
    print(f"release {versions.app} (chart {versions.chart}) for {', '.join(chosen)}", flush=True)

    # A manifest list, even of one platform: the image's tag names every architecture built.
    tagged = f"{image}:{versions.app}"
    if subprocess.run(["podman", "manifest", "exists", tagged]).returncode == 0:
        podman("manifest", "rm", tagged)
    build = ["build", "--platform", ",".join(chosen), "--manifest", tagged, "--build-arg", f"VERSION={versions.app}"]
    if python_image:
        build += ["--build-arg", f"PYTHON_IMAGE={python_image}"]
    if ca_bundle:
        build += ["--volume", f"{os.path.abspath(ca_bundle)}:{CA_IN_BUILD}:ro", "--build-arg", f"PIP_CA_BUNDLE={CA_IN_BUILD}"]
    podman(*build, str(ROOT))

    with tempfile.TemporaryDirectory() as tmp:
        digest_file = Path(tmp) / "digest"
        tls = ["--tls-verify=false"] if plain_http else []
        podman("manifest", "push", "--all", *tls, "--digestfile", str(digest_file), tagged, f"docker://{tagged}")
        print(f"pushed {tagged}@{digest_file.read_text().strip()}", flush=True)
        archive = helm.package(CHART_DIR, destination=tmp)
        try:
            helm.push(archive, chart_repository, plain_http=plain_http)
        except helm.HelmError as error:
            raise ReleaseError(f"pushing the chart to {chart_repository} failed: {error}") from None
    digest = helm.RegistryClient(plain_http=plain_http).resolve(f"{chart}:{versions.chart}")["digest"]
    print(f"pushed {chart}:{versions.chart}@{digest}")
    plain = " --plain-http" if plain_http else ""
    print(f"install: helm install tie {chart} --version {versions.chart}{plain} --namespace monitoring --set image.registry={registry}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make release", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--registry", required=True, help="host[:port][/path] the image and the chart are pushed to")
    parser.add_argument("--platforms", help="linux/<arch>,... to build (default: every release architecture this machine builds)")
    parser.add_argument("--python-image", help="the Dockerfile's PYTHON_IMAGE (default: the Dockerfile's, best pinned by digest)")
    parser.add_argument("--ca-bundle", help="a CA bundle for pip inside the build, behind a TLS-inspecting proxy")
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP to the registry (a local test registry)")
    args = parser.parse_args(argv)
    helm.disable_logging()
    try:
        release(args.registry, platforms=args.platforms, python_image=args.python_image, ca_bundle=args.ca_bundle, plain_http=args.plain_http)
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
