"""The chart's web configuration: the Secret holding --web.config.file, the mounts, the probes and
the ServiceMonitor's scheme/tlsConfig/basicAuth, for TLS only, basic auth only, and both.

Lint and the Kubernetes schemas of these scenarios run with every other one in test_helm_chart.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import helm_python as helm
import pytest
import yaml

from exporter.webconfig import load_web_config
from tests.exporter_process import ROOT
from tests.helm_chart import FULLNAME, NAMESPACE, container_args, render, render_scenario, scenario_values
from tests.pki import make_pki

TLS_SECRET = "twilio-insights-exporter-metrics-tls"
WEB_DIR, TLS_DIR = "/etc/twilio-insights-exporter-web", "/etc/twilio-insights-exporter-tls"


def web_config(scenario: str) -> dict[str, Any]:
    (secret,) = [m.doc for m in render_scenario(scenario).of_kind("Secret") if m.name == f"{FULLNAME}-web-config"]
    return yaml.safe_load(secret["stringData"]["web-config.yml"])


def endpoint(scenario: str) -> dict[str, Any]:
    (only,) = render_scenario(scenario).one("ServiceMonitor")["spec"]["endpoints"]
    return only


def mounts_and_volumes(scenario: str) -> tuple[dict[str, str], dict[str, Any]]:
    pod = render_scenario(scenario).one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}, {v["name"]: v for v in pod["volumes"]}


def test_without_web_config_nothing_changes():
    rendering = render_scenario("default")
    assert f"{FULLNAME}-web-config" not in [m.name for m in rendering.of_kind("Secret")]
    assert "--web.config.file" not in container_args(rendering.deployment_container())


@pytest.mark.parametrize("scenario", ["webconfig-tls", "webconfig-basicauth", "webconfig-both"])
def test_the_web_config_secret_is_mounted_whole_and_passed_as_the_flag(scenario):
    mounts, volumes = mounts_and_volumes(scenario)
    assert mounts["web-config"] == WEB_DIR
    assert volumes["web-config"]["secret"] == {"secretName": f"{FULLNAME}-web-config"}
    args = container_args(render_scenario(scenario).deployment_container())
    assert args["--web.config.file"] == f"{WEB_DIR}/web-config.yml"
    if scenario == "webconfig-basicauth":
        assert "web-tls" not in mounts
    else:
        assert mounts["web-tls"] == TLS_DIR
        assert volumes["web-tls"]["secret"] == {"secretName": TLS_SECRET}


def test_tls_only_serves_https_probes_over_https_and_the_service_monitor_trusts_the_secrets_ca():
    assert web_config("webconfig-tls") == {
        "tls_server_config": {
            "cert_file": f"{TLS_DIR}/tls.crt",
            "key_file": f"{TLS_DIR}/tls.key",
            "client_auth_type": "NoClientCert",
            "min_version": "TLS12",
        }
    }
    container = render_scenario("webconfig-tls").deployment_container()
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    scrape = endpoint("webconfig-tls")
    assert scrape["scheme"] == "https"
    assert scrape["tlsConfig"] == {"ca": {"secret": {"name": TLS_SECRET, "key": "ca.crt"}}, "serverName": f"{FULLNAME}-metrics.{NAMESPACE}.svc"}
    assert "basicAuth" not in scrape
    # Pods scraped by annotation (no ServiceMonitor: with one they carry no scrape annotations) announce https.
    without_monitor = render({**scenario_values("webconfig-tls"), "serviceMonitor": {"enabled": False}})
    annotations = without_monitor.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"


def test_basic_auth_only_keeps_plain_http_probes_and_the_service_monitor_sends_credentials(tmp_path: Path):
    config = web_config("webconfig-basicauth")
    assert set(config) == {"basic_auth_users", "http_server_config"}
    assert bcrypt.checkpw(b"example-password", config["basic_auth_users"]["prometheus"].encode())
    container = render_scenario("webconfig-basicauth").deployment_container()
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    scrape = endpoint("webconfig-basicauth")
    assert "scheme" not in scrape and "tlsConfig" not in scrape
    assert scrape["basicAuth"] == {
        "username": {"name": "prometheus-scrape-credentials", "key": "username"},
        "password": {"name": "prometheus-scrape-credentials", "key": "password"},
    }
    # The file the chart renders is one the exporter accepts.
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(config))
    assert load_web_config(path).config.http_server_config.headers == {"X-Content-Type-Options": "nosniff"}


def test_both_with_client_certificates_probe_by_tcp_and_the_service_monitor_shows_its_certificate():
    config = web_config("webconfig-both")
    assert config["tls_server_config"]["client_auth_type"] == "RequireAndVerifyClientCert"
    assert config["tls_server_config"]["client_ca_file"] == f"{TLS_DIR}/ca.crt"
    assert config["tls_server_config"]["min_version"] == "TLS13"
    container = render_scenario("webconfig-both").deployment_container()
    # The kubelet has no client certificate to show: a TCP check is what a probe can do.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert "httpGet" not in container[probe]
        assert container[probe]["tcpSocket"] == {"port": "metrics"}
    scrape = endpoint("webconfig-both")
    assert scrape["scheme"] == "https"
    assert scrape["tlsConfig"]["cert"] == {"secret": {"name": "prometheus-scrape-tls", "key": "tls.crt"}}
    assert scrape["basicAuth"]["password"]["name"] == "prometheus-scrape-credentials"


def test_the_helm_test_pod_knows_what_the_metrics_listener_asks_for():
    def script(scenario: str) -> str:
        (pod,) = [m.doc for m in render_scenario(scenario).of_kind("Pod")]
        return pod["spec"]["containers"][0]["command"][2]

    assert "tls = False" in script("default") and 'metrics = "http://' in script("default")
    assert "tls = True" in script("webconfig-tls") and 'metrics = "https://' in script("webconfig-tls")
    assert "basic_auth = True" in script("webconfig-basicauth")
    assert "client_cert_required = True" in script("webconfig-both")
    compile(script("webconfig-both"), "test-connection", "exec")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webConfig": {"enabled": True, "tls": {"enabled": True}}}, "webConfig.tls.enabled needs webConfig.tls.secretName"),
        (
            {"webConfig": {"enabled": True, "basicAuthUsers": {"p": "$2b$10$" + "a" * 53}}, "serviceMonitor": {"enabled": True}},
            "needs serviceMonitor.basicAuth.secretName",
        ),
        (
            {
                "webConfig": {"enabled": True, "tls": {"enabled": True, "secretName": "s", "clientAuthType": "RequireAndVerifyClientCert"}},
                "serviceMonitor": {"enabled": True},
            },
            "needs serviceMonitor.tlsConfig.cert",
        ),
    ],
)
def test_web_config_values_that_cannot_work_fail_to_render(values, message):
    with pytest.raises(helm.HelmRenderError) as failed:
        render(values)
    assert message in str(failed.value)


@pytest.mark.parametrize("scenario", ["webconfig-tls", "webconfig-basicauth", "webconfig-both"])
def test_the_exporter_accepts_the_rendered_web_config_with_the_secrets_files_where_the_chart_mounts_them(scenario, tmp_path: Path):
    pki = make_pki(tmp_path / "tls")
    # The kubernetes.io/tls Secret's keys, as the kubelet would project them.
    for key, source in (("tls.crt", "server.crt"), ("tls.key", "server.key"), ("ca.crt", "ca.crt")):
        (tmp_path / "tls" / key).write_bytes(pki.path(source).read_bytes())
    (secret,) = [m.doc for m in render_scenario(scenario).of_kind("Secret") if m.name == f"{FULLNAME}-web-config"]
    path = tmp_path / "web-config.yml"
    path.write_text(secret["stringData"]["web-config.yml"].replace(TLS_DIR + "/", f"{tmp_path / 'tls'}/"))
    checked = subprocess.run(
        [sys.executable, "-m", "exporter", f"--web.config.file={path}", "--check-config"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout)["web_config"]
    assert summary["tls"] is (scenario != "webconfig-basicauth")
    assert summary["client_auth_type"] == {"webconfig-tls": "NoClientCert", "webconfig-both": "RequireAndVerifyClientCert"}.get(scenario)
    assert summary["basic_auth_users"] == ([] if scenario == "webconfig-tls" else ["prometheus"])
