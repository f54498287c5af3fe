"""The container image, built from the Dockerfile with podman and run the way the chart runs it.

Read-only root filesystem, every capability dropped, the numeric non-root user, ready, a signed
delivery recorded, SIGTERM answered with exit 0. How podman runs on these VMs and the base the
build uses when no registry is reachable: tests/container_image.py.
"""

from __future__ import annotations

import json
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter.config import WebhookSettings, WebSettings
from exporter.synthetic import sign
from tests.container_image import HOST_CA, Podman, base_image, build_lock, podman_for_this_machine, prune_old_builds
from tests.exporter_process import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/twilio-insights-exporter:test"
TOKEN = "image-test-auth-token"
UID = 65532
CHART_VALUES = yaml.safe_load((ROOT / "helm/twilio-insights-exporter/values.yaml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    with podman_for_this_machine() as podman:
        yield podman


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    with build_lock():
        build = ["build", "--quiet", "--tag", IMAGE, "--build-arg", f"PYTHON_IMAGE={base_image(podman)}"]
        if HOST_CA.is_file():
            build += ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CA_BUNDLE=/run/host-ca.crt"]
        podman.run(*build, str(ROOT), timeout=1200)
    prune_old_builds(podman)
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
