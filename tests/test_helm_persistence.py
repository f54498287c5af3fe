"""The chart's state volume: one pod at a time, replaced rather than rolled."""

from __future__ import annotations

import helm_python as helm
import pytest

from exporter.config import WebhookSettings
from exporter.listener import RUNNER_SHUTDOWN_TIMEOUT as _RUNNER_SHUTDOWN_TIMEOUT
from tests.helm_chart import render

REFUSAL = "persistence.enabled needs exactly one replica"


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 2},
        {"autoscaling": {"enabled": True}},
        {"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}},
    ],
    ids=["two replicas", "autoscaling", "autoscaling even to one"],
)
def test_persistence_with_more_than_one_replica_or_autoscaling_is_refused_at_render_time(values):
    with pytest.raises(helm.HelmRenderError) as failed:
        render({"persistence": {"enabled": True}, **values})
    assert REFUSAL in str(failed.value)


@pytest.mark.parametrize("values", [{"replicaCount": 2}, {"autoscaling": {"enabled": True}}])
def test_several_replicas_without_persistence_still_render_with_a_rolling_update(values):
    deployment = render({"persistence": {"enabled": False}, **values}).one("Deployment")["spec"]
    assert deployment["strategy"]["type"] == "RollingUpdate"


def test_a_single_replica_with_a_volume_is_recreated_not_rolled():
    rendering = render({"persistence": {"enabled": True}, "replicaCount": 1})
    deployment = rendering.one("Deployment")["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}
    assert rendering.one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_grace_period_leaves_room_for_the_exporters_shutdown():
    # SIGTERM -> drain for up to --webhook.shutdown-timeout -> each listener stops within
    # _RUNNER_SHUTDOWN_TIMEOUT -> exit: all of it before the kubelet's SIGKILL.
    longest = WebhookSettings().shutdown_timeout.total_seconds() + 2 * _RUNNER_SHUTDOWN_TIMEOUT
    spec = render().one("Deployment")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 2 * longest
