"""``make release`` against a local registry: the image and the chart pushed, then pulled back.

Debian's docker-registry (the CNCF distribution registry) listens on a free loopback port, plain
HTTP, its storage in a temporary directory. The release builds the image as tests/test_image.py
does (the same base, CA bundle and podman settings, under the same lock), so one build's layers
serve the other and the module costs one build. The procedure: docs/release.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import helm_python as helm
import pytest

from scripts import release
from tests.container_image import HOST_CA, Podman, base_image, build_lock, podman_for_this_machine, prune_old_builds
from tests.exporter_process import free_port, stop, wait_for
from tests.helm_chart import NAMESPACE, RELEASE, chart, scenario_names, scenario_values

ROOT = Path(__file__).resolve().parent.parent
INSTALL_REGISTRY = "apt-get install docker-registry (make test-deps does it as root)"
VERSIONS = release.read_versions()
INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT

    def get(self, path: str, accept: str = "application/json") -> tuple[dict, str]:
        """A registry API answer and its Docker-Content-Digest header."""
        request = urllib.request.Request(f"http://{self.host}/v2/{path}", headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response), response.headers.get("Docker-Content-Digest", "")

    def tags(self, repository: str) -> list[str]:
        return self.get(f"{repository}/tags/list")[0]["tags"]


@dataclass
class Released:
    registry: Registry
    path: str  # what REGISTRY= was: 127.0.0.1:PORT/monitoring
    output: str

    @property
    def image(self) -> str:
        return f"{self.path}/{release.NAME}"

    @property
    def chart(self) -> str:
        return f"oci://{self.path}/charts/{release.NAME}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    assert shutil.which("docker-registry"), f"docker-registry is the local registry the release is pushed to: {INSTALL_REGISTRY}"
    tmp = tmp_path_factory.mktemp("registry")
    host = f"127.0.0.1:{free_port()}"
    config = tmp / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\nhttp:\n  addr: {host}\n")
    with (tmp / "registry.log").open("wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://{host}/v2/", proc=proc)
        yield Registry(host)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    with podman_for_this_machine() as podman:
        yield podman


def make_release(podman: Podman, path: str) -> subprocess.CompletedProcess[str]:
    with build_lock():
        args = [f"REGISTRY={path}", "PLAIN_HTTP=1", f"PYTHON_IMAGE={base_image(podman)}"]
        if HOST_CA.is_file():
            args.append(f"CA_BUNDLE={HOST_CA}")
        return subprocess.run(
            ["make", "--no-print-directory", "release", *args], cwd=ROOT, env=podman.env, capture_output=True, text=True, timeout=1500
        )


@pytest.fixture(scope="module")
def released(registry: Registry, podman: Podman) -> Iterator[Released]:
    path = f"{registry.host}/monitoring"
    result = make_release(podman, path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    try:
        yield Released(registry, path, result.stdout)
    finally:
        podman.run("manifest", "rm", f"{path}/{release.NAME}:{VERSIONS.app}", check=False)
        prune_old_builds(podman)


def pushed_digest(output: str, reference: str) -> str:
    """The digest ``make release`` printed for ``reference``; fails when it printed none."""
    (digest,) = re.findall(rf"^pushed {re.escape(reference)}@(sha256:[0-9a-f]{{64}})$", output, re.MULTILINE)
    return digest


def test_the_image_is_pushed_as_a_manifest_list_of_every_architecture_this_machine_builds(released: Released, podman: Podman) -> None:
    repository = f"monitoring/{release.NAME}"
    assert released.registry.tags(repository) == [VERSIONS.app]
    index, digest = released.registry.get(f"{repository}/manifests/{VERSIONS.app}", accept=INDEX)
    assert index.get("mediaType") == INDEX, index
    assert digest == pushed_digest(released.output, f"{released.image}:{VERSIONS.app}")
    native = podman.run("info", "--format", "{{.Host.Arch}}").stdout.strip()
    expected = release.choose_platforms(None, native)
    assert expected, "this machine builds no release architecture"
    assert [f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]] == expected
    assert f"for {', '.join(expected)}" in released.output


def test_every_image_of_the_list_is_whole_in_the_registry_and_labelled_with_the_release_version(released: Released) -> None:
    # Every blob each manifest names, at its size: what a node pulls. Running the image is
    # tests/test_image.py's (the same build: the release finds its layers in the cache); pulling
    # ~300 MB into an empty store to run it again costs ~35 s on the test VM.
    repository = f"monitoring/{release.NAME}"
    index, _ = released.registry.get(f"{repository}/manifests/{VERSIONS.app}", accept=INDEX)
    for entry in index["manifests"]:
        manifest, _ = released.registry.get(f"{repository}/manifests/{entry['digest']}", accept=entry["mediaType"])
        for blob in [manifest["config"], *manifest["layers"]]:
            request = urllib.request.Request(f"http://{released.registry.host}/v2/{repository}/blobs/{blob['digest']}", method="HEAD")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert int(response.headers["Content-Length"]) == blob["size"], blob
        with urllib.request.urlopen(f"http://{released.registry.host}/v2/{repository}/blobs/{manifest['config']['digest']}", timeout=10) as response:
            config = json.load(response)
        assert config["architecture"] == entry["platform"]["architecture"]
        assert config["config"]["Labels"]["org.opencontainers.image.version"] == VERSIONS.app
        assert config["config"]["Entrypoint"] == [release.NAME]


def test_the_chart_pulled_from_the_registry_renders_as_the_checkout_does(released: Released, tmp_path: Path) -> None:
    assert helm.RegistryClient(plain_http=True).tags(released.chart) == [VERSIONS.chart]
    helm.pull(released.chart, version=VERSIONS.chart, destination=tmp_path, plain_http=True)
    pulled = helm.Chart.load(tmp_path / f"{release.NAME}-{VERSIONS.chart}.tgz")
    assert (pulled.metadata["version"], pulled.metadata["appVersion"]) == (VERSIONS.chart, VERSIONS.app)
    # helm template of both, every scenario of ci/ (the package leaves ci/ out; the values come from the checkout).
    for scenario in scenario_names():
        values = scenario_values(scenario)
        ours = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        theirs = pulled.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        assert theirs == ours, (
            f"the pulled chart renders {scenario} differently: {sorted(p for p in ours.keys() | theirs.keys() if ours.get(p) != theirs.get(p))}"
        )


def test_the_install_command_printed_installs_the_image_pushed_beside_the_chart(released: Released, tmp_path: Path) -> None:
    (command,) = re.findall(r"^install: (helm install .*)$", released.output, re.MULTILINE)
    assert command == (
        f"helm install tie {released.chart} --version {VERSIONS.chart} --plain-http --namespace monitoring --set image.registry={released.path}"
    )
    helm.pull(released.chart, version=VERSIONS.chart, destination=tmp_path, plain_http=True)
    pulled = helm.Chart.load(tmp_path / f"{release.NAME}-{VERSIONS.chart}.tgz")
    rendered = pulled.render({"image": {"registry": released.path}}, name="tie", namespace="monitoring", is_install=True)
    (deployment,) = (text for path, text in rendered.items() if path.endswith("templates/deployment.yaml"))
    (image,) = re.findall(r"^\s+image: \"?([^\"\s]+)\"?$", deployment, re.MULTILINE)
    repository, _, tag = image.rpartition(":")
    assert repository == released.image
    assert tag in released.registry.tags(f"monitoring/{release.NAME}")


def test_a_second_release_of_the_same_versions_is_refused_and_the_registry_keeps_the_first(released: Released, podman: Podman) -> None:
    repository = f"monitoring/{release.NAME}"
    before = released.registry.get(f"{repository}/manifests/{VERSIONS.app}", accept=INDEX)[1]
    again = make_release(podman, released.path)
    assert again.returncode != 0
    assert f"release: {released.image}:{VERSIONS.app} is already published: bump the version in pyproject.toml" in again.stderr
    assert "podman build" not in again.stdout
    assert released.registry.get(f"{repository}/manifests/{VERSIONS.app}", accept=INDEX)[1] == before


def test_a_new_exporter_version_with_the_chart_version_already_published_is_refused(released: Released, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreleased_app(root: Path = ROOT) -> release.Versions:
        return release.Versions(app=VERSIONS.app + "-next", chart=VERSIONS.chart)

    monkeypatch.setattr(release, "read_versions", unreleased_app)
    with pytest.raises(
        release.ReleaseError, match=rf"charts/{release.NAME}:{re.escape(VERSIONS.chart)} is already published: bump the version in helm/"
    ):
        release.release(released.path, plain_http=True)


def test_the_exporter_version_is_written_once_in_pyproject_and_its_copies_agree(tmp_path: Path) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    (app,) = re.findall(r'^version = "(.+)"$', pyproject, re.MULTILINE)
    assert VERSIONS.app == app
    assert VERSIONS.chart == chart().metadata["version"]
    for copy, before, after in [
        (f"helm/{release.NAME}/Chart.yaml", f'appVersion: "{app}"', 'appVersion: "9.9.9"'),
        ("Dockerfile", f"ARG VERSION={app}", "ARG VERSION=9.9.9"),
    ]:
        for name in ("pyproject.toml", f"helm/{release.NAME}/Chart.yaml", "Dockerfile"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text((ROOT / name).read_text())
        original = (ROOT / copy).read_text()
        assert original.count(before) == 1, f"{copy} no longer writes {before!r}"
        (tmp_path / copy).write_text(original.replace(before, after))
        with pytest.raises(release.ReleaseError, match=rf"is 9\.9\.9 but pyproject\.toml's version is {re.escape(app)}: set it to {re.escape(app)}"):
            release.read_versions(tmp_path)


def test_the_release_builds_every_architecture_this_machine_runs_and_refuses_one_it_cannot(tmp_path: Path) -> None:
    assert release.choose_platforms(None, "amd64", tmp_path) == ["linux/amd64"]
    assert release.choose_platforms(None, "arm64", tmp_path) == ["linux/arm64"]
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    assert release.choose_platforms(None, "amd64", tmp_path) == ["linux/amd64"]
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    assert release.choose_platforms(None, "amd64", tmp_path) == ["linux/amd64", "linux/arm64"]
    assert release.choose_platforms("linux/arm64", "amd64", tmp_path) == ["linux/arm64"]
    with pytest.raises(release.ReleaseError, match=r"linux/amd64 cannot be built on this machine \(it builds linux/arm64\).*qemu-user-static"):
        release.choose_platforms("linux/arm64,linux/amd64", "arm64", tmp_path / "none")
