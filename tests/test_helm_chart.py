"""The Helm chart, rendered offline by the real Helm v4 (helm-python-sdk), checked manifest by manifest."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import schema_contents

from tests.helm_chart import (
    CHART_DIR,
    FULLNAME,
    KUBE_VERSION,
    NAMESPACE,
    ROOT,
    Manifest,
    chart,
    container_args,
    render,
    render_scenario,
    scenario_names,
    scenario_values,
    sizing,
)

SCENARIOS = scenario_names()
# Kinds defined by CRDs, which the Kubernetes OpenAPI document does not hold. HTTPRoute is checked
# against Gateway API's CRD schema (vendored under tests/helm_schemas/); ServiceMonitor and
# PrometheusRule are compared whole in their own tests, and the rules go through promtool.
CRD_SCHEMAS = {"HTTPRoute": ROOT / "tests" / "helm_schemas" / "httproute-gateway.networking.k8s.io-v1.json"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", *CRD_SCHEMAS}
PUBLIC_URL = "https://twilio-hooks.example.com/events"


def test_the_scenarios_cover_what_the_issue_asks_for():
    assert SCENARIOS == [
        "default",
        "all",
        "existing-secret",
        "hpa",
        "httproute",
        "ingress",
        "networkpolicy",
        "persistence",
        "pull",
        "webconfig-basicauth",
        "webconfig-both",
        "webconfig-tls",
        "flex",
    ]


# --- lint and schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints_strictly_without_a_single_message(scenario):
    report = helm.lint(CHART_DIR, scenario_values(scenario), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert report["messages"] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_manifest_validates_against_the_kubernetes_openapi_schemas(scenario):
    manifests = [m for m in render_scenario(scenario).manifests if m.kind not in CRD_KINDS]
    assert manifests
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest.doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest.template} {manifest.kind}/{manifest.name}: {'.'.join(map(str, error.path))}: {error.message}")


def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    definitions = schema_contents(f"kubernetes-json-schema/v{KUBE_VERSION}-local-strict/_definitions.json", KUBE_VERSION)
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return jsonschema.Draft202012Validator(json.loads(CRD_SCHEMAS[kind].read_text()), registry=registry)


def test_the_httproute_validates_against_the_gateway_api_crd_schema():
    validator = crd_validator("HTTPRoute")
    route = render_scenario("httproute").one("HTTPRoute")
    assert list(validator.iter_errors(route)) == []
    broken = copy.deepcopy(route)
    broken["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Regex"
    broken["metadata"]["labelz"] = {}
    assert sorted(error.message for error in validator.iter_errors(broken)) == [
        "'Regex' is not one of ['Exact', 'PathPrefix', 'RegularExpression']",
        "Additional properties are not allowed ('labelz' was unexpected)",
    ]


def test_everything_on_renders_every_kind_the_chart_offers():
    kinds = render_scenario("all").kinds()
    dashboards = sorted((ROOT / "dashboards").glob("*.json"))
    groups = [group for path in repository_rules_files() for group in yaml.safe_load(path.read_text())["groups"]]
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HTTPRoute", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "Pod"]
        + ["PodDisruptionBudget", "Secret", "Service", "Service", "ServiceAccount", "ServiceMonitor"]
        + ["ConfigMap"] * len(dashboards)
        + ["PrometheusRule"] * len(groups)
    )


def test_defaults_render_no_optional_resource():
    assert render_scenario("default").kinds() == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Pod",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
    ]


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"webhook": {"port": "8080"}}, "at '/webhook/port': got string, want integer"),
        ({"ingress": {"enabled": "yes"}}, "at '/ingress/enabled': got string, want boolean"),
        ({"ingress": {"hosts": "hooks.example.com"}}, "at '/ingress/hosts': got string, want array"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"ingress": {"host": "hooks.example.com"}}, "additional properties 'host' not allowed"),
        ({"log": {"format": "yaml"}}, "at '/log/format': value must be one of 'json', 'text'"),
        # The exporter refuses SI sizes (16MB is ambiguous): the chart must not let one through.
        ({"webhook": {"maxBodySize": "16MB"}}, "at '/webhook/maxBodySize'"),
        ({"webhook": {"memoryBudget": "176MB"}}, "at '/webhook/memoryBudget'"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(values, complaint):
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    assert complaint in str(refused.value)


def test_the_defaults_and_every_scenario_satisfy_the_schema():
    for scenario in SCENARIOS:
        chart().validate_schema(scenario_values(scenario))


# --- Deployment ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_hardened(scenario):
    pod = render_scenario(scenario).one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["resources"] == (sizing().FLEX if scenario == "flex" else sizing().DEFAULT).resources()


def test_service_links_are_off_so_no_variable_lands_in_the_exporters_env_namespace():
    pod = render_scenario("default").one("Deployment")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False


def test_probes_ask_the_metrics_listener_for_health_and_readiness():
    container = render_scenario("default").deployment_container()
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert container["ports"] == [
        {"name": "metrics", "containerPort": 9802, "protocol": "TCP"},
        {"name": "webhook", "containerPort": 8080, "protocol": "TCP"},
    ]


def test_default_args_match_the_container_ports_and_mount_the_config():
    container = render_scenario("default").deployment_container()
    assert container["args"] == [
        "--web.listen-address=:9802",
        "--webhook.listen-address=:8080",
        "--webhook.path=/events",
        "--config.file=/etc/twilio-insights-exporter/config.yaml",
        "--log.level=info",
        "--log.format=json",
        "--state.path=/var/lib/twilio-insights-exporter/state.sqlite",
    ]
    assert container["volumeMounts"] == [
        {"name": "config", "mountPath": "/etc/twilio-insights-exporter", "readOnly": True},
        {"name": "state", "mountPath": "/var/lib/twilio-insights-exporter"},
    ]
    assert container["image"] == "twilio-insights-exporter:0.1.0"


def test_everything_on_passes_every_flag_it_sets():
    args = container_args(render_scenario("all").deployment_container())
    assert args == {
        "--web.listen-address": ":9802",
        "--webhook.listen-address": ":8080",
        "--webhook.path": "/events",
        "--webhook.public-url": PUBLIC_URL,
        "--webhook.max-body-size": "32MiB",
        "--webhook.memory-budget": "352MiB",
        "--webhook.allowed-networks": "35.90.102.128/25,127.0.0.0/8",
        "--webhook.trusted-proxies": "10.0.0.0/8,192.168.0.0/16",
        "--config.file": "/etc/twilio-insights-exporter/config.yaml",
        "--log.level": "debug",
        "--log.format": "text",
        "--dedup.max-entries": "200000",
    }


def test_a_large_byte_count_is_passed_as_an_integer_not_in_float_notation():
    assert container_args(render_scenario("hpa").deployment_container())["--webhook.max-body-size"] == "2097152"


def test_trusting_forwarded_headers_is_a_bare_flag():
    args = container_args(render({"webhook": {"trustForwardedHeaders": True}}).deployment_container())
    assert args["--webhook.trust-forwarded-headers"] is None


def test_the_image_digest_wins_over_the_tag():
    digest = "sha256:" + "ab" * 32
    container = render({"image": {"registry": "ghcr.io", "repository": "acme/tie", "tag": "9.9.9", "digest": digest}}).deployment_container()
    assert container["image"] == f"ghcr.io/acme/tie@{digest}"


def test_topology_spread_constraints_get_the_pod_selector_unless_they_bring_their_own():
    own = {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"a": "b"}}}
    default_spread = render_scenario("default").one("Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    selector = {"matchLabels": {"app.kubernetes.io/name": "twilio-insights-exporter", "app.kubernetes.io/instance": "tie"}}
    assert default_spread == [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector},
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector},
    ]
    custom = render({"topologySpreadConstraints": [own]}).one("Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert custom == [own]


def test_pods_carry_scrape_annotations_by_default_and_not_when_turned_off():
    on = render_scenario("default").one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    off = render({"metrics": {"podAnnotations": False}}).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": "9802", "prometheus.io/path": "/metrics"}
    assert {k: on[k] for k in scrape} == scrape
    assert not set(scrape) & set(off)


def test_pods_carry_no_scrape_annotations_when_a_service_monitor_scrapes_them():
    """A Prometheus that discovers pods by annotation and reads ServiceMonitors would scrape each pod twice."""
    annotations = render({"serviceMonitor": {"enabled": True}}).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert sorted(annotations) == ["checksum/config", "checksum/secret"]
    assert "prometheus.io/scrape" not in render_scenario("all").one("Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_a_config_change_rolls_the_pods():
    def checksum(values):
        return render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(None) != checksum({"config": {"labels": {"account_sid": True}}})


def test_replicas_are_configurable_and_left_to_the_autoscaler_when_it_is_on():
    assert render({"replicaCount": 3, "persistence": {"enabled": False}}).one("Deployment")["spec"]["replicas"] == 3
    assert "replicas" not in render_scenario("hpa").one("Deployment")["spec"]


def test_the_config_map_holds_the_config_value_as_yaml():
    config_map = next(m.doc for m in render_scenario("all").of_kind("ConfigMap") if m.name == FULLNAME)
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == scenario_values("all")["config"]


# --- credentials -----------------------------------------------------------------------------


def test_secrets_reach_the_exporter_only_as_environment_variables_from_the_secret():
    rendering = render_scenario("all")
    secret = rendering.one("Secret")
    env = rendering.deployment_container()["env"]
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == {
        "auth-token": "test-auth-token",
        "auth-token-secondary": "test-auth-token-next",
        "basic-auth-username": "twilio",
        "basic-auth-password": "test-basic-password",
    }
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {
        "TWILIO_AUTH_TOKEN": {"name": FULLNAME, "key": "auth-token"},
        "TWILIO_AUTH_TOKEN_SECONDARY": {"name": FULLNAME, "key": "auth-token-secondary", "optional": True},
        "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME": {"name": FULLNAME, "key": "basic-auth-username", "optional": True},
        "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD": {"name": FULLNAME, "key": "basic-auth-password", "optional": True},
        "TWILIO_ACCOUNT_SID": {"name": FULLNAME, "key": "account-sid", "optional": True},
        "TWILIO_API_KEY": {"name": FULLNAME, "key": "api-key", "optional": True},
        "TWILIO_API_SECRET": {"name": FULLNAME, "key": "api-secret", "optional": True},
    }
    assert not any("test-auth-token" in arg for arg in rendering.deployment_container()["args"])


def test_an_existing_secret_replaces_the_charts_secret():
    rendering = render_scenario("existing-secret")
    assert rendering.of_kind("Secret") == []
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in rendering.deployment_container()["env"]}
    assert refs["TWILIO_AUTH_TOKEN"] == {"name": "twilio-credentials", "key": "TWILIO_AUTH_TOKEN"}
    assert refs["TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD"] == {"name": "twilio-credentials", "key": "BASIC_PASSWORD", "optional": True}
    assert "checksum/secret" not in rendering.one("Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_without_a_token_the_secret_lacks_the_key_and_the_notes_say_so():
    rendering = render_scenario("default")
    assert rendering.one("Secret")["data"] == {}
    assert "WARNING: no Twilio auth token." in rendering.notes


# --- exposure: Services, Ingress, HTTPRoute, public URL --------------------------------------


def test_two_services_one_for_metrics_one_for_the_webhook():
    services = {m.name: m.doc["spec"] for m in render_scenario("default").of_kind("Service")}
    assert {name: spec["ports"] for name, spec in services.items()} == {
        f"{FULLNAME}-metrics": [{"name": "metrics", "port": 9802, "targetPort": "metrics", "protocol": "TCP"}],
        f"{FULLNAME}-webhook": [{"name": "webhook", "port": 8080, "targetPort": "webhook", "protocol": "TCP"}],
    }
    assert {spec["type"] for spec in services.values()} == {"ClusterIP"}


def test_the_ingress_routes_only_the_webhook_path_to_the_webhook_service():
    ingress = render_scenario("ingress").one("Ingress")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "twilio-hooks-tls", "hosts": ["twilio-hooks.example.com"]}]
    assert ingress["rules"] == [
        {
            "host": "twilio-hooks.example.com",
            "http": {
                "paths": [
                    {
                        "path": "/events",
                        "pathType": "Exact",
                        "backend": {"service": {"name": f"{FULLNAME}-webhook", "port": {"name": "webhook"}}},
                    }
                ]
            },
        }
    ]


def test_the_httproute_routes_only_the_webhook_path_to_the_webhook_service():
    route = render_scenario("httproute").one("HTTPRoute")["spec"]
    assert route == {
        "parentRefs": [{"name": "public", "namespace": "gateway-system"}],
        "hostnames": ["twilio-hooks.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "Exact", "value": "/events"}}],
                "backendRefs": [{"name": f"{FULLNAME}-webhook", "port": 8080}],
            }
        ],
    }


@pytest.mark.parametrize(
    "scenario, url",
    [
        ("default", None),
        ("ingress", PUBLIC_URL),
        ("httproute", PUBLIC_URL),
        ("networkpolicy", PUBLIC_URL),  # explicit webhook.publicUrl
        ("all", PUBLIC_URL),  # the Ingress host comes before the HTTPRoute hostname
    ],
)
def test_the_exporter_is_told_the_url_twilio_signs(scenario, url):
    assert container_args(render_scenario(scenario).deployment_container()).get("--webhook.public-url") == url


def test_an_ingress_host_without_tls_gives_an_http_url_and_a_warning():
    rendering = render({"ingress": {"enabled": True, "hosts": ["hooks.example.com"]}, "webhook": {"path": "/twilio"}})
    assert container_args(rendering.deployment_container())["--webhook.public-url"] == "http://hooks.example.com/twilio"
    assert "WARNING: this URL is plain http." in rendering.notes


def test_an_explicit_public_url_wins_over_the_ingress_host():
    rendering = render({"ingress": {"enabled": True, "hosts": ["a.example.com"]}, "webhook": {"publicUrl": "https://b.example.com/x"}})
    assert container_args(rendering.deployment_container())["--webhook.public-url"] == "https://b.example.com/x"


@pytest.mark.parametrize("scenario", ["ingress", "httproute", "networkpolicy"])
def test_the_notes_tell_the_webhook_url_to_give_twilio(scenario):
    notes = render_scenario(scenario).notes
    assert f"1. The webhook URL to give Twilio (Event Streams webhook sink destination):\n\n     {PUBLIC_URL}\n" in notes
    assert f'"destination":"{PUBLIC_URL}"' in notes


def test_without_exposure_the_notes_explain_how_to_expose_the_webhook():
    notes = render_scenario("default").notes
    assert f"It listens on Service {FULLNAME}-webhook port 8080, path /events." in notes
    assert "set webhook.publicUrl to that URL" in notes


@pytest.mark.parametrize(
    "values, message",
    [
        ({"ingress": {"enabled": True}}, "ingress.hosts: name at least one host"),
        ({"httpRoute": {"enabled": True, "hostnames": ["h.example.com"]}}, "httpRoute.parentRefs: name the Gateway"),
        ({"networkPolicy": {"enabled": True, "webhook": {"allowTwilio": False, "from": []}}}, "would admit every source"),
        ({"networkPolicy": {"enabled": True, "metrics": {"from": []}}}, "would admit every source to /metrics"),
    ],
)
def test_values_that_would_mislead_fail_to_render(values, message):
    with pytest.raises(helm.HelmRenderError) as failed:
        render(values)
    assert message in str(failed.value)


def test_a_load_balancer_exposes_only_the_webhook_and_keeps_source_addresses():
    services = {m.name: m.doc["spec"] for m in render_scenario("networkpolicy").of_kind("Service")}
    assert services[f"{FULLNAME}-webhook"]["type"] == "LoadBalancer"
    assert services[f"{FULLNAME}-webhook"]["externalTrafficPolicy"] == "Local"
    assert services[f"{FULLNAME}-webhook"]["loadBalancerSourceRanges"] == ["35.90.102.128/25"]
    assert services[f"{FULLNAME}-metrics"]["type"] == "ClusterIP"


# --- NetworkPolicy, PDB, HPA, persistence ----------------------------------------------------


def test_network_policy_opens_the_webhook_to_twilio_and_the_metrics_port_to_prometheus_only():
    policy = render_scenario("networkpolicy").one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [
        {"ports": [{"port": "webhook", "protocol": "TCP"}], "from": [{"ipBlock": {"cidr": "35.90.102.128/25"}}]},
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        },
    ]


def test_network_policy_admits_the_ingress_controller_by_default():
    webhook_rule = render_scenario("all").one("NetworkPolicy")["spec"]["ingress"][0]
    assert webhook_rule["from"] == [
        {"ipBlock": {"cidr": "35.90.102.128/25"}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
    ]


def test_pdb_and_hpa_target_the_deployment():
    rendering = render_scenario("hpa")
    assert rendering.one("PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "twilio-insights-exporter", "app.kubernetes.io/instance": "tie"}},
    }
    hpa = rendering.one("HorizontalPodAutoscaler")["spec"]
    assert hpa == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME},
        "minReplicas": 2,
        "maxReplicas": 6,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}],
    }


def test_persistence_mounts_a_claim_passes_the_state_path_and_recreates_pods():
    rendering = render_scenario("persistence")
    deployment = rendering.one("Deployment")["spec"]
    container = rendering.deployment_container()
    assert deployment["strategy"] == {"type": "Recreate"}
    assert container_args(container)["--state.path"] == "/var/lib/twilio-insights-exporter/state.sqlite"
    assert {"name": "state", "mountPath": "/var/lib/twilio-insights-exporter"} in container["volumeMounts"]
    assert {"name": "state", "persistentVolumeClaim": {"claimName": FULLNAME}} in deployment["template"]["spec"]["volumes"]
    assert rendering.one("PersistentVolumeClaim")["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "standard",
        "resources": {"requests": {"storage": "2Gi"}},
    }
    assert "--state.path" not in container_args(render({"persistence": {"enabled": False}}).deployment_container())


def test_pull_mode_passes_the_flag_and_the_api_key_from_the_secret():
    rendering = render_scenario("pull")
    assert "--pull.enabled" in rendering.deployment_container()["args"]
    decoded = {key: base64.b64decode(value).decode() for key, value in rendering.one("Secret")["data"].items()}
    assert decoded == {"auth-token": "test-auth-token", "api-key": "SKtest0000000000000000000000000000", "api-secret": "test-api-secret"}
    assert "--pull.enabled" not in render_scenario("default").deployment_container()["args"]


@pytest.mark.parametrize("values", [{"replicaCount": 2}, {"autoscaling": {"enabled": True}}])
def test_pull_mode_refuses_more_than_one_replica(values):
    with pytest.raises(helm.HelmRenderError) as failed:
        render({"pull": {"enabled": True}, **values})
    assert "pull.enabled needs exactly one replica" in str(failed.value)


# --- ServiceMonitor, rules and dashboards from the repository --------------------------------


def test_service_monitor_scrapes_the_metrics_service_port():
    monitor = render_scenario("all").one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "twilio-insights-exporter",
        "app.kubernetes.io/instance": "tie",
        "app.kubernetes.io/component": "metrics",
    }
    metrics_service = next(m.doc for m in render_scenario("all").of_kind("Service") if m.name == f"{FULLNAME}-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "interval": "30s",
            "scrapeTimeout": "10s",
            "honorLabels": False,
            "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "python_gc_.*"}],
        }
    ]


def test_service_monitor_and_rule_carry_the_release_label_kube_prometheus_stack_selects_by_default():
    rendered = render({"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})
    assert rendered.one("ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = rendered.of_kind("PrometheusRule")
    assert rules and {rule.doc["metadata"]["labels"]["release"] for rule in rules} == {"kube-prometheus-stack"}
    mine = render({"serviceMonitor": {"enabled": True, "labels": {"release": "monitoring"}}}).one("ServiceMonitor")
    assert mine["metadata"]["labels"]["release"] == "monitoring"
    # Unset with null, as `--set serviceMonitor.labels.release=null` does, for a Prometheus that selects everything.
    none = render({"serviceMonitor": {"enabled": True, "labels": {"release": None}}}).one("ServiceMonitor")
    assert "release" not in none["metadata"]["labels"]


def test_rules_and_dashboards_are_symlinks_to_the_repository_not_copies():
    assert (CHART_DIR / "files" / "rules").readlink() == Path("../../../rules")
    assert (CHART_DIR / "files" / "dashboards").readlink() == Path("../../../dashboards")


def repository_rules_files() -> list[Path]:
    files = sorted((ROOT / "rules").glob("*.rules.yml"))
    assert files, "rules/*.rules.yml: the repository has no rules file"
    return files


def test_the_prometheus_rules_hold_exactly_the_repository_rules_one_group_an_object_named_after_it():
    expected = [group for path in repository_rules_files() for group in yaml.safe_load(path.read_text())["groups"]]
    rules = render_scenario("all").of_kind("PrometheusRule")
    assert [rule.doc["spec"]["groups"] for rule in rules] == [[group] for group in expected]
    assert [rule.name for rule in rules] == [
        f"{FULLNAME}-{group['name'].removeprefix('twilio-insights-exporter.').replace('.', '-').replace('_', '-')}" for group in expected
    ]
    assert {rule.name.removeprefix(f"{FULLNAME}-") for rule in rules} >= {
        "thresholds",
        "recording",
        "health",
        "quality",
        "slice-task-queue",
        "call-thresholds",
        "call-slice-carrier",
    }
    assert {rule.doc["metadata"]["namespace"] for rule in rules} == {"monitoring"}


def test_rendered_rules_pass_promtool(tmp_path):
    rules = tmp_path / "rendered.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": render_scenario("all").rule_groups()}))
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_each_dashboard_config_map_holds_exactly_the_generated_json():
    dashboards = sorted((ROOT / "dashboards").glob("*.json"))
    assert dashboards, "dashboards/*.json: the repository has no generated dashboard"
    config_maps = {m.name: m.doc for m in render_scenario("all").of_kind("ConfigMap") if m.name != FULLNAME}
    assert sorted(config_maps) == sorted(f"{FULLNAME}-dashboard-{p.stem.lower().replace('_', '-').replace('.', '-')}" for p in dashboards)
    for path in dashboards:
        (config_map,) = [cm for cm in config_maps.values() if path.name in cm["data"]]
        assert list(config_map["data"]) == [path.name]
        # The same dashboard, compact: no indentation, no newline.
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())
        assert "\n" not in config_map["data"][path.name]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Twilio"}


# Client-side `kubectl apply` (and Argo CD without server-side apply) stores the whole object as
# JSON in the last-applied-configuration annotation, and a Kubernetes object's annotations may
# hold 256 KiB in all; what the annotation holds is the object's compact JSON.
ANNOTATIONS_LIMIT = 256 * 1024


def last_applied_size(manifest: Manifest) -> int:
    return len(json.dumps(manifest.doc, separators=(",", ":"), ensure_ascii=False).encode())


def test_every_dashboard_config_map_fits_the_last_applied_annotation_with_a_quarter_to_spare():
    sizes = {m.name: last_applied_size(m) for m in render_scenario("all").of_kind("ConfigMap") if m.name != FULLNAME}
    assert sizes
    largest = max(sizes.values())
    print(f"\nlargest dashboard ConfigMap as last-applied JSON: {largest} bytes ({largest / ANNOTATIONS_LIMIT:.0%} of 256 KiB)")
    assert largest < 0.75 * ANNOTATIONS_LIMIT, sizes


# Every scenario, Kinesis mode, and everything on with every slice of the rules and the links set
# (the longest annotations): what a release can render.
SIZE_CASES = {
    **{scenario: scenario_values(scenario) for scenario in SCENARIOS},
    "kinesis": {"kinesis": {"streamName": "twilio-events"}, "prometheusRule": {"enabled": True}, "grafanaDashboards": {"enabled": True}},
    "linked": {
        "prometheusRule": {"enabled": True, "grafanaUrl": "https://grafana.example.org", "runbookBaseUrl": "https://wiki.example.org/runbooks"},
        "grafanaDashboards": {"enabled": True},
    },
}


@pytest.mark.parametrize("case", SIZE_CASES)
def test_every_rendered_object_fits_the_last_applied_annotation_with_a_quarter_to_spare(case):
    """Client-side `kubectl apply` and Argo CD refuse an object past 256 KiB of last-applied JSON:
    every object the chart renders, not only the dashboards (the rules were 348 KB in one object)."""
    manifests = render(SIZE_CASES[case]).manifests
    sizes = {f"{m.kind}/{m.name}": last_applied_size(m) for m in manifests}
    largest = max(sizes, key=sizes.__getitem__)
    print(f"\n{case}: {len(sizes)} objects, largest {largest} {sizes[largest]} bytes ({sizes[largest] / ANNOTATIONS_LIMIT:.0%} of 256 KiB)")
    assert {name: size for name, size in sizes.items() if size >= 0.75 * ANNOTATIONS_LIMIT} == {}


def test_the_size_check_counts_what_a_rule_object_holds():
    """Not vacuous: the rules of the three files in one object, as the chart rendered them before,
    are past the limit."""
    rules = render_scenario("all").of_kind("PrometheusRule")
    merged = Manifest(rules[0].template, {**rules[0].doc, "spec": {"groups": render_scenario("all").rule_groups()}})
    assert last_applied_size(merged) > ANNOTATIONS_LIMIT


def repository_files(directory: str) -> dict[str, bytes]:
    """What the chart should carry from a repository directory: its files, minus .helmignore'd ones."""
    base = ROOT / directory
    return {
        f"{directory}/{p.relative_to(base)}": p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and p.suffix in (".yml", ".yaml", ".json") and "tests" not in p.relative_to(base).parts
    }


def test_a_packaged_chart_holds_the_rules_and_dashboards_themselves(tmp_path):
    archive = Path(helm.package(CHART_DIR, destination=tmp_path))
    prefix = "twilio-insights-exporter/files/"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        packaged = {m.name.removeprefix(prefix): tar.extractfile(m).read() for m in tar.getmembers() if m.name.startswith(prefix)}
    assert packaged == repository_files("rules") | repository_files("dashboards")
    assert not [name for name in names if name.startswith("twilio-insights-exporter/ci/")]


# --- helm test -------------------------------------------------------------------------------


def test_helm_test_pod_checks_both_listeners_with_the_exporters_image():
    rendering = render_scenario("default")
    pod = rendering.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == rendering.deployment_container()["image"]
    script = container["command"][2]
    assert f'metrics = "http://{FULLNAME}-metrics:9802"' in script
    assert f'webhook = "http://{FULLNAME}-webhook:8080/events"' in script
    compile(script, "helm-test", "exec")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# --- values documentation --------------------------------------------------------------------


def load_generator():
    """helm/generate_readme.py as a module (helm/ is not a package)."""
    if "generate_readme" not in sys.modules:
        spec = importlib.util.spec_from_file_location("generate_readme", ROOT / "helm" / "generate_readme.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["generate_readme"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["generate_readme"]


def test_chart_readme_values_table_is_what_values_yaml_generates():
    checked = subprocess.run([sys.executable, str(ROOT / "helm" / "generate_readme.py"), "--check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_readme_check_fails_when_the_table_drifts(tmp_path, monkeypatch):
    generator = load_generator()
    chart = tmp_path / "chart"
    chart.mkdir()
    for name in ("values.yaml", "values.schema.json", "README.md"):
        (chart / name).write_text((CHART_DIR / name).read_text())
    (chart / "values.yaml").write_text((CHART_DIR / "values.yaml").read_text().replace("Number of exporter pods.", "How many pods."))
    monkeypatch.setattr(generator, "CHART_DIR", chart)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0
    assert "| `replicaCount` | integer | `1` | How many pods. Each pod" in (chart / "README.md").read_text()
    assert generator.main(["--check"]) == 0


def test_every_values_key_is_documented_and_an_undocumented_one_is_refused():
    generator = load_generator()
    values_text = (CHART_DIR / "values.yaml").read_text()
    rows = generator.parse_rows(values_text)
    documented = {row.key for row in rows}
    assert {"replicaCount", "twilio.authToken", "webhook.publicUrl", "networkPolicy.webhook.from", "tests.enabled"} <= documented
    with pytest.raises(generator.UndocumentedKeyError, match=r"keys without a '# --' comment: ingress.newKey"):
        generator.parse_rows(values_text.replace("ingress:\n", "ingress:\n  newKey: 1\n", 1))


def test_every_top_level_value_is_typed_in_the_schema():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])

    def walk(node_values, node_schema, path):
        for key, value in node_values.items():
            assert key in node_schema["properties"], f"{'.'.join((*path, key))} is not in values.schema.json"
            child = node_schema["properties"][key]
            if isinstance(value, dict) and child.get("additionalProperties") is False:
                walk(value, child, (*path, key))

    walk(values, schema, ())


def test_chart_version_is_semver_and_app_version_is_the_exporters():
    metadata = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    from exporter import __version__

    assert metadata["appVersion"] == __version__
    assert metadata["version"].count(".") == 2
