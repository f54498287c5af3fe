"""Bounded labels: the values a label keeps, the budget of label sets, and undoing a failed summary."""

from __future__ import annotations

from exporter.record.labels import OTHER, BoundedLabel
from exporter.subjects.participant import COMMON_LABELS
from exporter.subjects.participant import label_policy as participant_label_policy

VALUES = dict(zip(COMMON_LABELS, ("sip", "inbound", "us1", "us1", "US", "agent"), strict=True))


def test_a_lone_surrogate_in_a_label_value_is_written_as_a_replacement_character() -> None:
    # No door lets one through today (models.loads refuses them); the label stays writable if one ever does.
    label = BoundedLabel("participant_label", 10, None)

    assert label.value("ag\udce9nt") == "ag\ufffdnt"
    assert label.value("\ud800a\udfff") == "\ufffda\ufffd"  # both ends of the surrogate range
    assert label.value("caf\u00e9") == "caf\u00e9"


def test_a_label_set_of_a_summary_whose_recording_was_undone_gives_its_place_in_the_budget_back() -> None:
    policy = participant_label_policy(COMMON_LABELS, max_label_sets=1)
    first = policy.common(VALUES, {}, [])
    policy.forget(policy.admit(first, []))

    overflow: list[str] = []
    second = policy.common({**VALUES, "country_code": "GB"}, {}, overflow)

    assert overflow == []
    assert second == (*first[:4], "GB", "agent") != (OTHER,) * len(COMMON_LABELS)
    assert policy.label_sets == set()
    assert policy["country_code"].kept == set()


def test_the_worst_case_label_set_count_is_the_product_of_caps_and_allowlists_when_under_the_budget() -> None:
    policy = participant_label_policy(
        ("call_type", "call_direction"),
        max_values={"call_type": 2, "call_direction": 1},
        allowlists={"call_direction": frozenset({"inbound", "outbound", "trunking"})},
    )

    # (2 values + unknown + other) x (3 allowed + unknown + other)
    assert policy.worst_case_label_sets() == 4 * 5


def test_two_new_detail_values_of_one_summary_cannot_both_take_the_last_free_place() -> None:
    policy = participant_label_policy(COMMON_LABELS, max_values={"tag": 1, "action": 1})
    pending: dict[str, set[str]] = {}
    overflow: list[str] = []

    values = [policy.detail("tag", tag, pending, overflow) for tag in ("silent", "high_jitter", "silent")]
    action = policy.detail("action", "hold", pending, overflow)  # another label's place is its own

    assert values == ["silent", OTHER, "silent"] and action == "hold"
    assert overflow == ["tag"]


def test_undoing_a_summary_forgets_only_the_values_it_brought_and_unknown_or_other_never_take_a_place() -> None:
    policy = participant_label_policy(COMMON_LABELS, max_values={"tag": 2})
    common = tuple(VALUES.values())
    assert policy.admit(common, [("tag", "silent")]) == [*VALUES.items(), ("label_set", "\x00".join(common)), ("tag", "silent")]

    second = policy.admit(common, [("tag", "silent"), ("tag", OTHER), ("tag", "unknown")])
    policy.forget(second)

    assert second == []
    assert policy["tag"].kept == {"silent"} and common in policy.label_sets
