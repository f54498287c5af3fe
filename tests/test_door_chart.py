"""The chart's side of the door: persistence by default, source networks, health checks of cloud load balancers."""

from __future__ import annotations

import helm_python as helm
import pytest

from tests.helm_chart import container_args, render

INGRESS = {"ingress": {"enabled": True, "hosts": ["hooks.example.com"]}}


def test_the_default_install_keeps_its_state_on_a_volume_one_pod_at_a_time() -> None:
    rendering = render()
    deployment = rendering.one("Deployment")["spec"]

    assert (deployment["replicas"], deployment["strategy"]) == (1, {"type": "Recreate"})
    assert container_args(rendering.deployment_container())["--state.path"] == "/var/lib/twilio-insights-exporter/state.sqlite"
    assert rendering.one("PersistentVolumeClaim")["spec"]["resources"] == {"requests": {"storage": "1Gi"}}


def test_persistence_off_keeps_the_state_in_memory_and_says_what_a_restart_loses() -> None:
    rendering = render({"persistence": {"enabled": False}})

    assert "PersistentVolumeClaim" not in rendering.kinds()
    assert "--state.path" not in container_args(rendering.deployment_container())
    assert rendering.one("Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "a redelivery after the restart counts twice" in rendering.notes
    assert "survives a crash, an OOM kill" in render().notes


def test_allowed_networks_and_trusted_proxies_become_the_flags() -> None:
    args = container_args(
        render({"webhook": {"allowedNetworks": ["35.90.102.128/25"], "trustedProxies": ["10.0.0.0/8", "fd00::/8"]}}).deployment_container()
    )

    assert (args["--webhook.allowed-networks"], args["--webhook.trusted-proxies"]) == ("35.90.102.128/25", "10.0.0.0/8,fd00::/8")
    assert "--webhook.allowed-networks" not in container_args(render().deployment_container())


def test_the_schema_refuses_a_network_that_is_not_a_cidr() -> None:
    with pytest.raises(helm.HelmError):
        render({"webhook": {"allowedNetworks": ["twilio"]}})


def test_allowed_networks_behind_an_ingress_without_trusted_proxies_is_warned_about() -> None:
    notes = render({**INGRESS, "webhook": {"allowedNetworks": ["35.90.102.128/25"]}}).notes

    assert "WARNING: webhook.allowedNetworks is set behind an Ingress/HTTPRoute without webhook.trustedProxies" in notes


def test_cloud_load_balancers_probe_the_webhook_listeners_readiness_and_the_operators_annotations_win() -> None:
    rendering = render({**INGRESS, "webhook": {"service": {"type": "LoadBalancer"}}})
    ingress = rendering.one("Ingress")["metadata"]["annotations"]
    [service] = [s.doc for s in rendering.of_kind("Service") if s.name.endswith("-webhook")]

    assert ingress == {"alb.ingress.kubernetes.io/healthcheck-path": "/-/ready", "alb.ingress.kubernetes.io/success-codes": "200"}
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path": "/-/ready",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol": "HTTP",
    }
    mine = render({"ingress": {**INGRESS["ingress"], "annotations": {"alb.ingress.kubernetes.io/healthcheck-path": "/-/healthy"}}})
    assert mine.one("Ingress")["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"] == "/-/healthy"
    assert "annotations" not in render({**INGRESS, "webhook": {"healthCheck": {"annotations": False}}}).one("Ingress")["metadata"]


def test_a_gke_backend_config_points_the_health_check_at_the_webhook_port() -> None:
    rendering = render({"webhook": {"healthCheck": {"gkeBackendConfig": True}}})
    config = rendering.one("BackendConfig")
    [service] = [s.doc for s in rendering.of_kind("Service") if s.name.endswith("-webhook")]

    assert config["spec"] == {"healthCheck": {"type": "HTTP", "requestPath": "/-/ready", "port": 8080}}
    assert service["metadata"]["annotations"] == {"cloud.google.com/backend-config": f'{{"default": "{config["metadata"]["name"]}"}}'}
