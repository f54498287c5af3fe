"""--web.config.file: the metrics listener behind TLS, client certificates and basic auth.

A real Prometheus scrapes the real exporter (a subprocess) over TLS with a client certificate and
basic auth; a wrong password and a missing client certificate are refused. The rules of the file
(what it refuses, the probes without credentials, the headers) are checked in process through the
app factory; re-reading on SIGHUP and on a file change through the subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.webconfig import WebConfigError, WebConfigHolder, load_web_config
from tests.conftest import HarnessFactory
from tests.exporter_process import ROOT, free_port, stop
from tests.helpers import clean_environ, until_blocking
from tests.pki import PKI, make_pki

USER, PASSWORD = "prometheus", "scrape-password-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def hashed(password: str) -> str:
    # Cost 4, the least bcrypt allows: the tests check many passwords; the format is the same.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write_web_config(path: Path, pki: PKI | None, *, client_auth: str | None = None, users: dict[str, str] | None = None, **extra: Any) -> Path:
    config: dict[str, Any] = dict(extra)
    if pki is not None:
        tls: dict[str, Any] = {"cert_file": str(pki.path("server.crt")), "key_file": str(pki.path("server.key"))}
        if client_auth:
            tls |= {"client_auth_type": client_auth, "client_ca_file": str(pki.path("ca.crt"))}
        config["tls_server_config"] = tls
    if users is not None:
        config["basic_auth_users"] = {user: hashed(password) for user, password in users.items()}
    path.write_text(yaml.safe_dump(config))
    return path


def client_context(pki: PKI, *, client_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.path("ca.crt"))
    if client_cert:
        context.load_cert_chain(pki.path("client.crt"), pki.path("client.key"))
    return context


def get(url: str, context: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5, context=context) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read().decode()


def poll(what: str, check: Any, deadline_seconds: float = 30.0) -> None:
    until_blocking(check, what, seconds=deadline_seconds, step=0.1)


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    metrics: str
    log: Path


@contextlib.contextmanager
def exporter(tmp_path: Path, web_config: Path, ready: Any) -> Iterator[Exporter]:
    """The real command line with --web.config.file; ``ready(base_url)`` says when it answers."""
    port = free_port()
    log = tmp_path / f"exporter-{port}.log"
    # A token, so the exporter can be ready (without one every delivery is answered 503 and /-/ready says so).
    env = clean_environ() | {"TWILIO_AUTH_TOKEN": "web-config-test-token"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--webhook.listen-address=127.0.0.1:{free_port()}",
                f"--web.config.file={web_config}",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"https://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, f"exporter exited {proc.returncode}: {log.read_text()}"
            try:
                return ready(base)
            except (urllib.error.URLError, ConnectionError, ssl.SSLError, TimeoutError):
                return False

        poll("exporter ready", up)
        yield Exporter(proc, base, log)
    finally:
        stop(proc)


# --- a real Prometheus -------------------------------------------------------------------------


def test_prometheus_scrapes_over_tls_with_a_client_certificate_and_basic_auth_and_wrong_credentials_are_refused(pki: PKI, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is needed: apt-get install prometheus"
    web_config = write_web_config(tmp_path / "web.yml", pki, client_auth="RequireAndVerifyClientCert", users={USER: PASSWORD})
    ready = lambda base: get(base + "/-/ready", client_context(pki))[0] == 200  # noqa: E731
    with exporter(tmp_path, web_config, ready) as running:
        target = running.metrics.removeprefix("https://")
        tls = {"ca_file": str(pki.path("ca.crt")), "cert_file": str(pki.path("client.crt")), "key_file": str(pki.path("client.key"))}
        jobs = {
            "good": {"tls_config": tls, "basic_auth": {"username": USER, "password": PASSWORD}},
            "wrong-password": {"tls_config": tls, "basic_auth": {"username": USER, "password": "not-the-password"}},
            "no-client-cert": {"tls_config": {"ca_file": str(pki.path("ca.crt"))}, "basic_auth": {"username": USER, "password": PASSWORD}},
        }
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": job, "scheme": "https", "static_configs": [{"targets": [target]}], **extra} for job, extra in jobs.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with open(tmp_path / "prometheus.log", "w") as out:
            prometheus = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            api = f"http://127.0.0.1:{port}/api/v1/targets"

            def targets() -> dict[str, dict[str, Any]]:
                import json

                try:
                    with urllib.request.urlopen(api, timeout=5) as response:
                        active = json.load(response)["data"]["activeTargets"]
                except (urllib.error.URLError, ConnectionError):
                    return {}
                return {t["labels"]["job"]: t for t in active if t["health"] != "unknown"}

            # Until the good job's scrape succeeded: its first one may time out on a loaded machine
            # (the refused jobs never succeed, whenever they are looked at).
            poll("all three jobs scraped, the good one successfully", lambda: len(t := targets()) == 3 and t["good"]["health"] == "up")
            seen = targets()
            assert seen["good"]["health"] == "up", seen["good"]["lastError"]
            assert seen["wrong-password"]["health"] == "down"
            assert seen["no-client-cert"]["health"] == "down"
            # Refused in the handshake (Go reports the closed connection as EOF): no HTTP answer at all.
            assert "server returned HTTP status" not in seen["no-client-cert"]["lastError"], seen["no-client-cert"]["lastError"]
            assert "server returned HTTP status 401" in seen["wrong-password"]["lastError"]
        finally:
            stop(prometheus)
        # What Prometheus stored came through the good job: the exporter's own metrics.
        status, _, body = get(running.metrics + "/metrics", client_context(pki), (USER, PASSWORD))
        assert status == 200 and "twilio_insights_exporter_" in body


# --- the listener ------------------------------------------------------------------------------


def test_without_a_client_certificate_the_handshake_fails_when_one_is_required(pki: PKI, tmp_path: Path) -> None:
    web_config = write_web_config(tmp_path / "web.yml", pki, client_auth="RequireAndVerifyClientCert")
    with exporter(tmp_path, web_config, lambda base: get(base + "/-/ready", client_context(pki))[0] == 200) as running:
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(running.metrics + "/metrics", client_context(pki, client_cert=False))
        # Plain HTTP on the TLS port gets nothing either.
        with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
            get(running.metrics.replace("https://", "http://") + "/metrics")


def http_client_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def test_sighup_rereads_the_users_and_the_certificate(pki: PKI, tmp_path: Path) -> None:
    web_config = write_web_config(tmp_path / "web.yml", pki, users={USER: PASSWORD})
    context = client_context(pki, client_cert=False)
    with exporter(tmp_path, web_config, lambda base: get(base + "/-/ready", context)[0] == 200) as running:
        assert get(running.metrics + "/metrics", context, (USER, PASSWORD))[0] == 200
        first_cert = ssl.get_server_certificate(("127.0.0.1", int(running.metrics.rsplit(":", 1)[1])))
        # A new password and a new server certificate from another CA.
        other = make_pki(tmp_path / "other-pki")
        write_web_config(web_config, other, users={USER: "new-password"})
        running.proc.send_signal(signal.SIGHUP)
        new_context = client_context(other, client_cert=False)

        def new_password_works() -> bool:
            try:
                return get(running.metrics + "/metrics", new_context, (USER, "new-password"))[0] == 200
            except (urllib.error.URLError, ssl.SSLError, ConnectionError):
                return False

        poll("the new certificate and password in force", new_password_works)
        poll("the old listener gone", lambda: "serving the reloaded TLS configuration" in running.log.read_text())
        assert get(running.metrics + "/metrics", new_context, (USER, PASSWORD))[0] == 401
        assert ssl.get_server_certificate(("127.0.0.1", int(running.metrics.rsplit(":", 1)[1]))) != first_cert
        # A broken file is refused and the last good configuration stays.
        web_config.write_text("basic_auth_users: {prometheus: not-a-hash}\n")
        running.proc.send_signal(signal.SIGHUP)
        poll("the refusal logged", lambda: "web configuration not reloaded" in running.log.read_text())
        assert get(running.metrics + "/metrics", new_context, (USER, "new-password"))[0] == 200
        assert "not-a-hash" not in running.log.read_text()


# --- the rules of the file, through the app factory -------------------------------------------


async def test_basic_auth_guards_metrics_but_not_the_probes_and_headers_are_set(make_harness: HarnessFactory, tmp_path: Path) -> None:
    headers = {"Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "deny"}
    web_config = write_web_config(tmp_path / "web.yml", None, users={USER: PASSWORD}, http_server_config={"headers": headers})
    h = await make_harness(f"--web.config.file={web_config}")
    good = aiohttp_basic(USER, PASSWORD)
    for auth, expected in ((None, 401), (aiohttp_basic(USER, "wrong"), 401), (aiohttp_basic("nobody", PASSWORD), 401), (good, 200)):
        response = await h.metrics.get("/metrics", headers=auth or {})
        assert response.status == expected, auth
        assert {k: response.headers[k] for k in headers} == headers
    unauthorized = await h.metrics.get("/metrics")
    assert unauthorized.headers["WWW-Authenticate"] == 'Basic realm="twilio-insights-exporter"'
    for probe in ("/-/healthy", "/-/ready"):
        assert (await h.metrics.get(probe)).status == 200
    # The second good answer comes from the remembered check; still right.
    assert (await h.metrics.get("/metrics", headers=good)).status == 200


def aiohttp_basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tls_server_config: {cert_file: a.crt}\n", "tls_server_config.key_file: Field required"),
        ("basic_auth_users: {alice: plain-text}\n", "the password of user 'alice' is not a bcrypt hash"),
        ("http_server_config: {headers: {Server: x}}\n", "header 'Server' cannot be set"),
        ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAnyClientCert}\n", "tls_server_config.client_auth_type"),
        ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAndVerifyClientCert}\n", "needs client_ca_file"),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_AES_128_GCM_SHA256]}\n",
            "tls_server_config.cipher_suites: not a known setting",
        ),
        ("tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n", "cannot load cert_file"),
        ("basic_auth_users: [alice]\n", "basic_auth_users"),
        ("- a\n", "the top level must be a mapping"),
        ("tls_server_config: {cert_file: [\n", ":2:1: not valid YAML"),
        ("basic_auth_users:\n  alice: x\n  alice: y\n", "web.yml:3:3: not valid YAML: duplicate key 'alice' (first at line 2, column 3)"),
    ],
)
def test_a_web_config_file_that_cannot_be_used_is_refused_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(content)
    with pytest.raises(WebConfigError) as error:
        load_web_config(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_relative_paths_are_relative_to_the_file(pki: PKI) -> None:
    path = pki.path("web.yml")
    path.write_text("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13}\n")
    loaded = load_web_config(path)
    assert loaded.ssl_context is not None and loaded.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_a_changed_file_is_noticed_and_reread_and_switching_tls_on_needs_a_restart(pki: PKI, tmp_path: Path) -> None:
    path = write_web_config(tmp_path / "web.yml", None, users={USER: PASSWORD})
    holder = WebConfigHolder(path, load_web_config(path))
    assert not holder.changed()
    write_web_config(path, None, users={USER: PASSWORD, "second": "another-password"})
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later mtime even on a coarse clock
    assert holder.changed()
    assert holder.reload()
    assert set(holder.config.basic_auth_users) == {USER, "second"}
    assert not holder.changed()
    # TLS cannot be switched on under a plain listener: refused, the old configuration stays.
    write_web_config(path, pki, users={USER: PASSWORD})
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert not holder.reload()
    assert holder.loaded.ssl_context is None and set(holder.config.basic_auth_users) == {USER, "second"}
    assert not holder.changed()
