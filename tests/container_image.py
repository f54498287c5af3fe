"""podman as the image tests run it, and the base image they build on, shared by tests/test_image.py
and tests/test_release.py.

No registry is reachable on CI, so when the ``python:*-slim`` base cannot be pulled the tests build a
stand-in base from Debian with debootstrap (python3, venv, pip from Debian's bundled wheel, no
EXTERNALLY-MANAGED marker) and keep it in podman's store for the next run. Measured on a shared
2-core VM: cold (debootstrap and a build without cache) ~2 min 20 s; the base kept, a build without
layer cache ~40 s; nothing changed ~20 s.

What these VMs need of podman, found by trying: its default rlimits exceed the VM's hard limit
(default_ulimits: open files at the hard limit, processes at 32768), crun refuses the VM's cgroup
layout (runc), and pip inside the build reaches the package index only with the host's CA bundle
(mounted read-only).
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "apt-get install podman runc debootstrap (make test-deps does it as root)"
UPSTREAM_BASE = (ROOT / "Dockerfile").read_text().split("ARG PYTHON_IMAGE=", 1)[1].split()[0]
STAND_IN_BASE = "localhost/twilio-insights-exporter-stand-in-base:bookworm"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# One build at a time on the machine: the suite's workers (and other checkouts) share podman's store,
# so the second build waits and then finds every layer of the first in the cache instead of
# building the same layers at the same time on the same cores.
BUILD_LOCK = Path(tempfile.gettempdir()) / "twilio-insights-exporter-image-build.lock"


@dataclass
class Podman:
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])}... exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result


@contextmanager
def podman_for_this_machine() -> Iterator[Podman]:
    """podman with a containers.conf that fits the VM (runc, rlimits under the hard limits)."""
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


@contextmanager
def build_lock() -> Iterator[None]:
    with BUILD_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def base_image(podman: Podman) -> str:
    """The Dockerfile's ``python:*-slim`` base when it can be pulled, else the stand-in."""
    pulled = podman.run("pull", "--quiet", UPSTREAM_BASE, check=False, timeout=120).returncode == 0
    return UPSTREAM_BASE if pulled else stand_in_base(podman)


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


def prune_old_builds(podman: Podman) -> None:
    """Each build with changed sources leaves the previous image and build stage untagged (~0.5 GB):
    keep the last hour's as the layer cache, drop the rest so repeated runs do not fill the disk."""
    podman.run("image", "prune", "--force", "--filter", "until=1h", check=False)
