"""The chart in Kinesis consumer mode: flags the exporter accepts, an IAM role for the service account, one replica."""

from __future__ import annotations

import helm_python as helm
import pytest

from exporter.config import load_config
from tests.helm_chart import container_args, render

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
