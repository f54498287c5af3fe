"""Test certificates made with the real openssl: a CA, a server certificate for 127.0.0.1 and localhost,
and a client certificate, for the TLS and client-certificate tests of --web.config.file."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PKI:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate, made with openssl."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> PKI:
    """A new CA, server and client certificate (two days) in ``directory``."""
    assert shutil.which("openssl"), "openssl makes the test certificates: apt-get install openssl"
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca", cwd=directory
    )
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject, extensions in (("server", "/CN=localhost", ["-extfile", "san.cnf"]), ("client", "/CN=prometheus", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *extensions,
            cwd=directory,
        )
    return PKI(directory)
