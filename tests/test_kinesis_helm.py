"""The chart in Kinesis consumer mode: flags the exporter accepts, an IAM role for the service account, one replica."""

from __future__ import annotations

import helm_python as helm
import pytest

from exporter.config import load_config
from tests.helm_chart import FULLNAME, container_args, render

ROLE = "arn:aws:iam::123456789012:role/twilio-insights-exporter"
KINESIS = {
    "streamName": "twilio-events",
    "region": "eu-west-1",
    "endpointUrl": "https://vpce-0123.kinesis.eu-west-1.vpce.amazonaws.com",
    "roleArn": ROLE,
}


def test_kinesis_mode_passes_flags_the_exporter_accepts_and_annotates_the_service_account():
    rendering = render({"twilio": {"authToken": "t"}, "kinesis": KINESIS})
    container = rendering.deployment_container()
    args = container_args(container)
    assert args["--kinesis.stream-name"] == "twilio-events"
    assert args["--kinesis.region"] == "eu-west-1"
    assert args["--kinesis.endpoint-url"] == KINESIS["endpointUrl"]
    assert args["--kinesis.start-position"] == "trim_horizon"
    settings = load_config([arg for arg in container["args"] if arg.startswith("--kinesis.")]).settings.kinesis
    assert (settings.stream_name, settings.region, settings.start_position) == ("twilio-events", "eu-west-1", "trim_horizon")
    assert rendering.one("ServiceAccount")["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}
    # No webhook listener in Kinesis mode, and nothing exposes one: no Ingress.
    assert rendering.of_kind("Ingress") == []


def test_kinesis_mode_turns_the_webhook_off_with_a_flag_the_exporter_parses():
    args = render({"kinesis": KINESIS}).deployment_container()["args"]
    assert "--no-webhook.enabled" in args
    flags = [arg for arg in args if arg.startswith(("--kinesis.", "--webhook.", "--no-webhook."))]
    settings = load_config(flags).settings
    assert settings.webhook.enabled is False
    assert settings.kinesis.stream_name == "twilio-events"
    # Without a stream the webhook is the door, left on.
    webhook_only = [arg for arg in render({}).deployment_container()["args"] if arg.startswith(("--webhook.", "--no-webhook."))]
    assert "--no-webhook.enabled" not in webhook_only
    assert load_config(webhook_only).settings.webhook.enabled is True


def test_without_a_stream_no_kinesis_flag_and_no_role_annotation():
    rendering = render({"twilio": {"authToken": "t"}})
    assert not [arg for arg in rendering.deployment_container()["args"] if arg.startswith("--kinesis.")]
    assert "annotations" not in rendering.one("ServiceAccount")["metadata"]


def test_the_role_annotation_joins_the_service_accounts_own_annotations():
    rendering = render({"twilio": {"authToken": "t"}, "kinesis": KINESIS, "serviceAccount": {"annotations": {"team": "voice"}}})
    assert rendering.one("ServiceAccount")["metadata"]["annotations"] == {"team": "voice", "eks.amazonaws.com/role-arn": ROLE}


@pytest.mark.parametrize("values", [{"replicaCount": 2}, {"autoscaling": {"enabled": True}}])
def test_kinesis_mode_refuses_more_than_one_replica(values):
    with pytest.raises(helm.HelmRenderError) as failed:
        render({"kinesis": {"streamName": "twilio-events"}, **values})
    assert "kinesis.streamName needs exactly one replica" in str(failed.value)


@pytest.mark.parametrize("values", [{"startPosition": "earliest"}, {"streamName": "has spaces"}, {"roleArn": "my-role"}])
def test_the_schema_refuses_bad_kinesis_values(values):
    with pytest.raises(helm.HelmValuesError, match="/kinesis/"):
        render({"kinesis": values})


def test_kinesis_mode_runs_without_a_twilio_auth_token():
    """The auth token only verifies webhook deliveries: a Kinesis-only release need not have one."""
    env = {var["name"]: var for var in render({"kinesis": {"streamName": "twilio-events"}}).deployment_container()["env"]}
    assert env["TWILIO_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    webhook_env = {var["name"]: var for var in render({"twilio": {"authToken": "t"}}).deployment_container()["env"]}
    assert "optional" not in webhook_env["TWILIO_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]


# Everything that could show the webhook: a NetworkPolicy (its webhook rule), a GKE BackendConfig
# (its health check of the webhook port), a LoadBalancer Service.
WEBHOOK_EXTRAS = {
    "networkPolicy": {"enabled": True},
    "webhook": {"healthCheck": {"gkeBackendConfig": True}, "service": {"type": "LoadBalancer"}},
}


def test_kinesis_mode_renders_no_webhook_service_port_flag_policy_rule_or_check():
    """The process listens for no webhook in Kinesis mode: nothing may point at one. The same values
    without a stream render each of them, so each assertion can fail."""
    for kinesis, expected in ((KINESIS, False), ({}, True)):
        rendering = render({**WEBHOOK_EXTRAS, "kinesis": kinesis})
        container = rendering.deployment_container()
        script = rendering.one("Pod")["spec"]["containers"][0]["command"][2]
        shown = {
            "service": f"{FULLNAME}-webhook" in [service.name for service in rendering.of_kind("Service")],
            "port": "webhook" in [port["name"] for port in container["ports"]],
            "flags": any(arg.startswith("--webhook.") for arg in container["args"]),
            "policy": any(rule["ports"][0]["port"] == "webhook" for rule in rendering.one("NetworkPolicy")["spec"]["ingress"]),
            "backend config": bool(rendering.of_kind("BackendConfig")),
            "helm test": f"{FULLNAME}-webhook:8080/events" in script,
        }
        assert shown == dict.fromkeys(shown, expected), kinesis
        compile(script, "helm-test", "exec")
    assert [service.name for service in render({"kinesis": KINESIS}).of_kind("Service")] == [f"{FULLNAME}-metrics"]


def test_kinesis_mode_notes_name_the_stream_and_give_no_webhook_step():
    notes = render({"kinesis": KINESIS}).notes
    assert "1. Kinesis mode: the exporter reads the Event Streams Kinesis sink's stream twilio-events" in notes
    for webhook_step in ("webhook URL", "webhook.publicUrl", f"{FULLNAME}-webhook", "sinks:create", "WARNING: no Twilio auth token"):
        assert webhook_step not in notes, webhook_step
    assert "1. The webhook URL to give Twilio" in render({}).notes


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"ingress": {"enabled": True, "hosts": ["hooks.example.com"]}}, "ingress.enabled"),
        ({"httpRoute": {"enabled": True, "parentRefs": [{"name": "public"}]}}, "httpRoute.enabled"),
    ],
)
def test_kinesis_mode_refuses_to_expose_a_webhook_it_does_not_have(values, key):
    with pytest.raises(helm.HelmRenderError) as failed:
        render({"kinesis": KINESIS, **values})
    assert f"{key}: Kinesis mode (kinesis.streamName) has no webhook to expose" in str(failed.value)
