"""The container image, built from the Dockerfile with podman and run the way the chart runs it.

Read-only root filesystem, every capability dropped, the numeric non-root user, ready, a signed
delivery recorded, SIGTERM answered with exit 0. No registry is reachable on CI, so when the
``python:*-slim`` base cannot be pulled the test builds a stand-in base from Debian with
debootstrap (python3, venv, pip from Debian's bundled wheel, no EXTERNALLY-MANAGED marker) and
keeps it in podman's store for the next run. Measured on a shared 2-core VM: cold (debootstrap and a
build without cache) ~2 min 20 s; the base kept, a build without layer cache ~40 s; nothing changed ~20 s.

What these VMs need of podman, found by trying: its default rlimits exceed the VM's hard limit
(default_ulimits: open files at the hard limit, processes at 32768), crun refuses the VM's cgroup layout (runc), and pip inside
the build reaches the package index only with the host's CA bundle (mounted read-only).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter.config import WebhookSettings, WebSettings
from exporter.synthetic import sign
from tests.exporter_process import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "apt-get install podman runc debootstrap (make test-deps does it as root)"
UPSTREAM_BASE = (ROOT / "Dockerfile").read_text().split("ARG PYTHON_IMAGE=", 1)[1].split()[0]
STAND_IN_BASE = "localhost/twilio-insights-exporter-stand-in-base:bookworm"
IMAGE = "localhost/twilio-insights-exporter:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
TOKEN = "image-test-auth-token"
UID = 65532
CHART_VALUES = yaml.safe_load((ROOT / "helm/twilio-insights-exporter/values.yaml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Podman:
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])}... exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    for tool in ("podman", "runc"):
        assert shutil.which(tool), f"{tool} is needed to build and run the image: {INSTALL}"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "containers.conf"
        # podman's defaults for open files and processes exceed the VM's hard limits: open files at
        # the hard limit; processes at 32768, buildah's own default (on these VMs runc was refused
        # 65536 processes even under a hard limit of 96365, and 32768 worked).
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nproc = 32768 if hard_nproc == resource.RLIM_INFINITY else min(hard_nproc, 32768)
        ulimits = f'"nproc={nproc}:{nproc}"' + (f', "nofile={nofile}:{nofile}"' if nofile != resource.RLIM_INFINITY else "")
        conf.write_text(f'[containers]\ndefault_ulimits = [{ulimits}]\n\n[engine]\nruntime = "runc"\n')
        yield Podman({**os.environ, "CONTAINERS_CONF": str(conf)})


def stand_in_base(podman: Podman) -> str:
    """A Debian bookworm root filesystem with Python, made by debootstrap, imported as an image."""
    if podman.run("image", "exists", STAND_IN_BASE, check=False).returncode == 0:
        return STAND_IN_BASE
    assert shutil.which("debootstrap"), f"debootstrap builds the stand-in base image: {INSTALL}"
    assert os.geteuid() == 0, "debootstrap needs root to build the stand-in base image: run make test as root"
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python-is-python3,ca-certificates", "bookworm", str(rootfs)],
            check=True,
            capture_output=True,
            timeout=900,
        )
        # pip for the system Python from Debian's bundled wheel, as python:*-slim has it; no
        # EXTERNALLY-MANAGED marker, as the Dockerfile's final stage uninstalls pip with pip.
        (wheel,) = (rootfs / "usr/share/python-wheels").glob("pip-*.whl")
        inside = f"/usr/share/python-wheels/{wheel.name}"
        pip_install = ["chroot", str(rootfs), "python3", f"{inside}/pip", "install", "--quiet", "--no-index", "--break-system-packages", inside]
        subprocess.run(pip_install, check=True, capture_output=True)
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for cache in ("var/lib/apt/lists", "var/cache/apt"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "--quiet", "-", STAND_IN_BASE], stdin=tar.stdout, env=podman.env, capture_output=True, text=True
        )
        tar.wait()
        assert tar.stdout is not None
        tar.stdout.close()
        assert imported.returncode == 0, imported.stderr
    return STAND_IN_BASE


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    pulled = podman.run("pull", "--quiet", UPSTREAM_BASE, check=False, timeout=120).returncode == 0
    base = UPSTREAM_BASE if pulled else stand_in_base(podman)
    build = ["build", "--quiet", "--tag", IMAGE, "--build-arg", f"PYTHON_IMAGE={base}"]
    if HOST_CA.is_file():
        build += ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CA_BUNDLE=/run/host-ca.crt"]
    podman.run(*build, str(ROOT), timeout=1200)
    # Each build with changed sources leaves the previous image and build stage untagged (~0.5 GB):
    # keep the last hour's as the layer cache, drop the rest so repeated runs do not fill the disk.
    podman.run("image", "prune", "--force", "--filter", "until=1h", check=False)
    return IMAGE


@dataclass
class Container:
    id: str
    metrics: str
    webhook: str


@pytest.fixture
def container(podman: Podman, image: str) -> Iterator[Container]:
    metrics_port, webhook_port = free_port(), free_port()
    started = podman.run(
        "run",
        "--detach",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        # The host's loopback, so the test reaches it without podman's port forwarding.
        "--network=host",
        "--env",
        f"TWILIO_AUTH_TOKEN={TOKEN}",
        image,
        f"--web.listen-address=127.0.0.1:{metrics_port}",
        f"--webhook.listen-address=127.0.0.1:{webhook_port}",
    )
    cid = started.stdout.strip()
    try:
        yield Container(cid, f"http://127.0.0.1:{metrics_port}", f"http://127.0.0.1:{webhook_port}/events")
    finally:
        podman.run("rm", "--force", "--time=0", cid, check=False)


def in_container(podman: Podman, container: Container, code: str) -> str:
    return podman.run("exec", container.id, "python", "-c", code).stdout.strip()


def test_the_image_runs_the_console_script_as_the_user_and_on_the_ports_the_chart_expects(podman: Podman, image: str) -> None:
    (inspected,) = json.loads(podman.run("image", "inspect", image).stdout)
    config = inspected["Config"]
    assert config["Entrypoint"] == ["twilio-insights-exporter"]
    assert PYPROJECT["project"]["scripts"] == {"twilio-insights-exporter": "exporter.__main__:main"}
    uid, gid = (int(part) for part in config["User"].split(":"))
    assert uid != 0 and gid != 0
    for context in (CHART_VALUES["podSecurityContext"], CHART_VALUES["securityContext"]):
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    metrics, webhook = (int(address.rpartition(":")[2]) for address in (WebSettings().listen_address, WebhookSettings().listen_address))
    assert set(config["ExposedPorts"]) == {f"{metrics}/tcp", f"{webhook}/tcp"}
    assert (CHART_VALUES["metrics"]["port"], CHART_VALUES["webhook"]["port"]) == (metrics, webhook)
    # Nothing to build or install at run time: no pip, no source tree, only the virtualenv.
    probe = "import importlib.util, os; print(importlib.util.find_spec('pip') is None, os.path.exists('/src'))"
    assert podman.run("run", "--rm", "--entrypoint=python", image, "-c", probe).stdout.split() == ["True", "False"]


def test_the_image_runs_read_only_without_capabilities_as_non_root_and_records_a_signed_delivery(podman: Podman, container: Container) -> None:
    try:
        wait_for(container.metrics + "/-/ready", deadline_seconds=60)
    except TimeoutError:
        raise AssertionError(podman.run("logs", container.id, check=False).stderr) from None
    (inspected,) = json.loads(podman.run("inspect", container.id).stdout)
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["Config"]["User"] == f"{UID}:{UID}"
    # What the process itself has: the user, no capability at all, a root filesystem it cannot write.
    assert in_container(podman, container, "import os; print(os.getuid(), os.getgid())") == f"{UID} {UID}"
    status = in_container(podman, container, "print(open('/proc/1/status').read())")
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines() if line.startswith("Cap")}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == 0, caps
    write = "import errno\ntry:\n    open('/opt/venv/x', 'w')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])"
    assert in_container(podman, container, write) == "EROFS"
    # The bytecode ships in the image: nothing to compile on a read-only filesystem.
    cached = "import importlib.util, os, exporter.app as m; print(os.path.exists(importlib.util.cache_from_source(m.__file__)))"
    assert in_container(podman, container, cached) == "True"

    body = (ROOT / "tests/fixtures/reference_event.json").read_bytes()
    url, signature = sign(container.webhook, body, TOKEN)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", "X-Twilio-Signature": signature})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(container.metrics + "/metrics", timeout=10) as response:
        exposition = response.read().decode()
    recorded = [line for line in exposition.splitlines() if line.startswith("twilio_conference_participant_summaries_total{")]
    assert len(recorded) == 1 and recorded[0].endswith(" 1.0"), recorded

    podman.run("kill", "--signal=TERM", container.id)
    assert podman.run("wait", container.id, timeout=30).stdout.strip() == "0"
    result = podman.run("logs", container.id)
    logs = result.stdout + result.stderr
    assert '"msg": "shutting down"' in logs
    assert TOKEN not in logs
