"""The exporter, started with exactly the args and env the chart's Deployment renders, runs.

Each scenario's Deployment is read back from the rendered manifests and "scheduled" locally the
way the kubelet would: ConfigMap volumes become files in a temporary directory (args that point
into a mount are rewritten to it), ``secretKeyRef`` variables are resolved from the rendered
Secret (or from a stand-in for ``existingSecret``), and the two listen addresses become free
loopback ports. Then a delivery signed for the public URL Twilio would call must be recorded.
"""

from __future__ import annotations

import base64
import json
import platform
import random
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from exporter.synthetic import batch_body, cloud_event, generate_summary, sign
from tests.exporter_process import ROOT as EXPORTER_ROOT
from tests.exporter_process import start_exporter
from tests.helm_chart import Rendering, container_args, render_scenario, scenario_names, scenario_values
from tests.helpers import signed_query

# Stands in for the Secret that existing-secret-values.yaml names and the chart does not create.
EXISTING_SECRETS = {
    "twilio-credentials": {
        "TWILIO_AUTH_TOKEN": "existing-auth-token",
        "BASIC_USER": "hooks",
        "BASIC_PASSWORD": "existing-basic-password",
    }
}
# "default" has no auth token: the kubelet refuses to start that pod (see the test below); nor has
# "flex", the defaults with the Flex profile's resources (tests/test_helm_sizing.py). The
# webconfig-* scenarios mount a TLS Secret the chart does not create: tests/test_helm_web_config.py
# runs their rendered web configuration through the exporter with certificates of its own.
CHECKED = [name for name in scenario_names() if name not in ("default", "flex") and not name.startswith("webconfig-")]
# "pull" would poll Twilio's real API, out of reach here; its configuration is still checked, and
# pull mode itself is exercised against a fake API by the exporter's own tests.
RUN = [name for name in CHECKED if name != "pull"]


class MissingSecretKey(Exception):
    """What the kubelet reports as CreateContainerConfigError."""


def secret_data(rendering: Rendering) -> dict[str, dict[str, str]]:
    rendered = {
        m.name: {key: base64.b64decode(value).decode() for key, value in (m.doc.get("data") or {}).items()} for m in rendering.of_kind("Secret")
    }
    return EXISTING_SECRETS | rendered


def resolve_env(rendering: Rendering) -> dict[str, str]:
    """The container's environment as the kubelet builds it from ``env``."""
    secrets = secret_data(rendering)
    env: dict[str, str] = {}
    for variable in rendering.deployment_container()["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        ref = variable["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            if ref.get("optional", False):
                continue
            raise MissingSecretKey(f"couldn't find key {ref['key']} in Secret {ref['name']}")
        env[variable["name"]] = value
    return env


def materialise_volumes(rendering: Rendering, tmp_path: Path) -> list[str]:
    """Each volume as a directory (a ConfigMap's keys as files, a claim empty, as when new);
    return the args with mount paths rewritten to those directories."""
    pod = rendering.one("Deployment")["spec"]["template"]["spec"]
    container = rendering.deployment_container()
    config_maps = {m.name: m.doc for m in rendering.of_kind("ConfigMap")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = list(container["args"])
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        directory = tmp_path / mount["name"]
        directory.mkdir()
        if "configMap" in volume:
            for key, content in config_maps[volume["configMap"]["name"]]["data"].items():
                (directory / key).write_text(content)
        else:
            assert set(volume) == {"name", "persistentVolumeClaim"}, volume
        args = [arg.replace(mount["mountPath"] + "/", f"{directory}/") for arg in args]
    return args


def loopback_args(rendering: Rendering, tmp_path: Path) -> list[str]:
    """The rendered args, minus the listen addresses (start_exporter binds free loopback ports)."""
    container = rendering.deployment_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    parsed = container_args(container)
    # Dropping them is only sound if they name the ports the Services and probes point at.
    assert parsed["--web.listen-address"] == f":{ports['metrics']}"
    assert parsed["--webhook.listen-address"] == f":{ports['webhook']}"
    listen = ("--web.listen-address=", "--webhook.listen-address=")
    return [arg for arg in materialise_volumes(rendering, tmp_path) if not arg.startswith(listen)]


def url_twilio_calls(rendering: Rendering, scenario: str) -> str | None:
    """The sink URL, read from what exposes the webhook (not from the exporter's own flags)."""
    if ingresses := rendering.of_kind("Ingress"):
        spec = ingresses[0].doc["spec"]
        host, path = spec["rules"][0]["host"], spec["rules"][0]["http"]["paths"][0]["path"]
        scheme = "https" if any(host in tls["hosts"] for tls in spec.get("tls", [])) else "http"
        return f"{scheme}://{host}{path}"
    if routes := rendering.of_kind("HTTPRoute"):
        spec = routes[0].doc["spec"]
        return f"https://{spec['hostnames'][0]}{spec['rules'][0]['matches'][0]['path']['value']}"
    # A proxy outside the chart (here a LoadBalancer): the operator states its URL.
    return (scenario_values(scenario) or {}).get("webhook", {}).get("publicUrl")


def test_the_url_twilio_calls_is_known_for_each_exposed_scenario():
    assert {name: url_twilio_calls(render_scenario(name), name) for name in RUN} == {
        "all": "https://twilio-hooks.example.com/events",
        "existing-secret": None,
        "hpa": None,
        "httproute": "https://twilio-hooks.example.com/events",
        "ingress": "https://twilio-hooks.example.com/events",
        "networkpolicy": "https://twilio-hooks.example.com/events",
        "persistence": None,
    }


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def metric_value(metrics_url: str, sample: str) -> float | None:
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
    return None


def test_the_scenarios_left_out_are_exactly_the_documented_ones():
    assert CHECKED == ["all", "existing-secret", "hpa", "httproute", "ingress", "networkpolicy", "persistence", "pull"]
    assert RUN == ["all", "existing-secret", "hpa", "httproute", "ingress", "networkpolicy", "persistence"]


def test_without_an_auth_token_the_pod_cannot_start():
    with pytest.raises(MissingSecretKey, match="couldn't find key auth-token in Secret tie-twilio-insights-exporter"):
        resolve_env(render_scenario("default"))


@pytest.mark.parametrize("scenario", CHECKED)
def test_the_rendered_config_validates_with_check_config(scenario, tmp_path):
    rendering = render_scenario(scenario)
    env = resolve_env(rendering)
    checked = subprocess.run(
        [sys.executable, "-m", "exporter", *loopback_args(rendering, tmp_path), "--check-config"],
        cwd=EXPORTER_ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    settings = report["settings"]
    args = container_args(rendering.deployment_container())
    assert settings["webhook"]["public_url"] == args.get("--webhook.public-url")
    assert settings["log"] == {"level": args["--log.level"], "format": args["--log.format"]}
    assert report["auth_tokens"] == (2 if scenario == "all" else 1)
    if scenario == "all":
        # The ConfigMap's YAML reached the exporter.
        assert settings["labels"]["account_sid"] is True
        assert settings["labels"]["limits"]["participant_label"]["allowlist"] == ["agent", "customer"]
        assert settings["dedup"]["window"] == "6h"
        assert settings["dedup"]["max_entries"] == 200000
        assert settings["webhook"]["max_body_size"] == "32MiB"  # --check-config prints sizes as written
    assert settings["pull"]["enabled"] is (scenario == "pull")
    if scenario == "pull":
        assert settings["pull"]["interval"] == "2m"
        assert settings["state"]["path"] == str(tmp_path / "state" / "state.sqlite")


@pytest.mark.parametrize("scenario", RUN)
def test_exporter_started_as_the_deployment_says_records_a_delivery_signed_for_the_public_url(scenario, tmp_path):
    rendering = render_scenario(scenario)
    env = resolve_env(rendering)
    args = loopback_args(rendering, tmp_path)
    path = container_args(rendering.deployment_container())["--webhook.path"]
    public_url = url_twilio_calls(rendering, scenario)
    headers = {}
    if "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME" in env:
        credentials = f"{env['TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME']}:{env['TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD']}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    body = batch_body([cloud_event(generate_summary(random.Random(4)))])
    with start_exporter(*args, env=env, tmp_path=tmp_path, webhook_path=path) as exporter:
        assert (
            metric_value(exporter.metrics_url, f'twilio_insights_exporter_build_info{{python_version="{platform.python_version()}",version="0.1.0"}}')
            == 1.0
        )
        # Twilio signs the URL it calls; behind the ingress that is the public URL, not the one the
        # exporter sees. It verifies only if the Deployment told the exporter that URL.
        signed_url, signature = sign(public_url or exporter.webhook_url, body, env["TWILIO_AUTH_TOKEN"])
        status, answer = post(f"{exporter.webhook_url}?{signed_query(signed_url)}", body, {**headers, "X-Twilio-Signature": signature})
        assert (status, answer) == (200, {"recorded": 1})
        recorded = 'twilio_insights_exporter_events_total{outcome="recorded",source="webhook",type="summary"}'
        assert metric_value(exporter.metrics_url, recorded) == 1.0
        state_path = container_args(rendering.deployment_container()).get("--state.path")
        if state_path is not None:
            # The state file lands on the claim's mount, the one writable place in the pod.
            assert state_path == "/var/lib/twilio-insights-exporter/state.sqlite"
            assert (tmp_path / "state" / "state.sqlite").is_file()
        if public_url is not None:
            # The same delivery signed for the URL the exporter sees locally is refused: the
            # public URL, and only it, is what signatures are checked against.
            local_url, local_signature = sign(exporter.webhook_url, body, env["TWILIO_AUTH_TOKEN"])
            status, _ = post(local_url, body, {**headers, "X-Twilio-Signature": local_signature})
            assert status == 403
