"""Which labels exist and how each stays bounded.

Every label value that comes from a summary passes through a :class:`BoundedLabel`: a missing
value becomes ``unknown``; a value outside the allowlist, or past the label's cap of distinct
values, becomes ``other`` and is counted in ``twilio_insights_exporter_label_overflow_total``.
Caps per label are not enough on their own: their product is the number of possible common
label sets (10^8 with the defaults), so :class:`LabelPolicy` also caps the number of distinct
common label sets; past that budget, a new combination folds into the one overflow set (every
common label ``other``). Call, conference and participant SIDs are never labels: they are
exemplars.

Admitting a value is split in two, so a summary is recorded all or nothing: :meth:`LabelPolicy.plan`
decides the values of a summary without changing anything, :meth:`LabelPolicy.admit` keeps them
once the summary is recorded (and again when the durable state is replayed).

Each kind of summary has its own policy (participants: :data:`COMMON_LABELS`; calls:
:func:`call_label_policy`; conferences: :func:`conference_label_policy`), with its own caps,
allowlists and budget of label sets.

Why one module: every kind's policy is built from the same :class:`BoundedLabel` and
:class:`LabelPolicy`, and docs/metrics.md's caps and worst-case counts are read from these constants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from exporter.reader import clean_value

UNKNOWN = "unknown"
OTHER = "other"

# The labels every participant series carries, in exposition order.
COMMON_LABELS = ("call_type", "call_direction", "participant_region", "conference_region", "country_code", "participant_label")
# The TaskRouter join's labels (exporter/join.py), first among every kind's common labels: a
# state file of schema 3 gains them as 'unknown' in front of each saved label set (state.py).
JOIN_LABELS = ("task_queue", "workflow", "team")
# A Workspace allows 5,000 queues and 1,000 workflows (taskrouter-join-facts.md §5.1): the caps
# are what a dashboard can still show, a centre of 50 queues and 20 teams with headroom.
JOIN_MAX_VALUES = {"task_queue": 100, "workflow": 20, "team": 50}
# Common labels an operator can switch on.
OPTIONAL_LABELS = ("account_sid", "jitter_buffer_size")

# Why each cap: the documented vocabulary plus headroom for values Twilio adds later. country_code
# and participant_label are the open ones, bounded by what a dashboard can still show.
DEFAULT_MAX_VALUES = {
    "call_type": 10,
    "call_direction": 5,
    "participant_region": 20,
    "conference_region": 20,
    "country_code": 100,
    "participant_label": 50,
    "account_sid": 50,
    "jitter_buffer_size": 10,
    "processing_state": 10,
    "call_status": 20,
    "tag": 50,
    "issue": 20,
    "severity": 10,
    "metric": 20,
    "action": 30,
    **JOIN_MAX_VALUES,
}

# Distinct common label sets kept before new combinations fold into the overflow set. A contact
# centre uses a few hundred (a handful of regions x call types x a few dozen countries x a few
# roles); each set costs about 200 samples, so the default bounds the participant families at
# about 200k samples whatever arrives (docs/metrics.md, "Cardinality").
#
# The join labels multiply the sets: a centre of 50 queues x 20 teams, with up to four sets of
# the other labels per (queue, team) pair (the customer's and the agent's legs, a country or
# two), needs 4,000 more; so the budget is today's 1000 (kept whole: an upgrade's sets, all
# 'unknown' in the join labels, never fold) plus 4,000.
JOIN_LABEL_SETS = 50 * 20
DEFAULT_MAX_LABEL_SETS = 1000 + 4 * JOIN_LABEL_SETS

# The name under which a folded label set is counted in label_overflow_total.
LABEL_SET = "label_set"


class BoundedLabel:
    """The values one label may take: first come, first kept, up to a cap (or an allowlist)."""

    __slots__ = ("allowlist", "kept", "max_values", "name")

    def __init__(self, name: str, max_values: int, allowlist: frozenset[str] | None) -> None:
        self.name = name
        self.max_values = max_values
        self.allowlist = allowlist
        self.kept: set[str] = set()

    def value(self, raw: str | None, pending: dict[str, set[str]] | None = None) -> str:
        """The label value to use for ``raw``, without keeping it.

        ``pending`` (``{label: values}``) holds the values a summary being planned has claimed
        already (a new one is added), so two new values of one summary cannot both take the last
        free place. Its set for this label is made only when a new value needs it: most values
        are kept already, and this runs for every label of every summary.

        >>> label = BoundedLabel("call_type", 1, None)
        >>> label.value("sip"), label.value(None), label.value("carrier", {"call_type": {"sip"}})
        ('sip', 'unknown', 'other')
        """
        if raw is None:
            return UNKNOWN
        value = clean_value(raw)
        if not value:
            return UNKNOWN
        if value in self.kept:
            return value
        if self.allowlist is not None:
            return value if value in self.allowlist else OTHER
        if pending is None:
            return value if len(self.kept) < self.max_values else OTHER
        claimed = pending.get(self.name)
        if claimed is None:
            claimed = pending[self.name] = set()
        elif value in claimed:
            return value
        if len(self.kept) + len(claimed) >= self.max_values:
            return OTHER
        claimed.add(value)
        return value

    def admit(self, value: str) -> bool:
        """Keep ``value`` (a value :meth:`value` returned); True if it was new."""
        if value in (UNKNOWN, OTHER) or value in self.kept:
            return False
        self.kept.add(value)
        return True


class LabelPolicy:
    """All bounded labels of the exporter and the budget of common label sets."""

    def __init__(
        self,
        common_names: tuple[str, ...],
        max_values: Mapping[str, int] | None = None,
        allowlists: Mapping[str, frozenset[str]] | None = None,
        max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
        defaults: Mapping[str, int] = DEFAULT_MAX_VALUES,
        default_allowlists: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        # defaults: the labels of one kind of summary and their caps (a kind's own policy: the
        # participants' by default, CALL_MAX_VALUES or CONFERENCE_MAX_VALUES for the others).
        caps = {**defaults, **(max_values or {})}
        allowed = {**(default_allowlists or {}), **(allowlists or {})}
        self.common_names = common_names
        self.labels = {name: BoundedLabel(name, caps[name], allowed.get(name)) for name in defaults}
        self._common = [self.labels[name] for name in common_names]
        self.max_label_sets = max_label_sets
        self.label_sets: set[tuple[str, ...]] = set()
        self.overflow_set = (OTHER,) * len(common_names)

    def __getitem__(self, name: str) -> BoundedLabel:
        return self.labels[name]

    def common(self, values: Mapping[str, str | None], pending: dict[str, set[str]], overflow: list[str]) -> tuple[str, ...]:
        """The common label values of one summary, in the order of :attr:`common_names`.

        Nothing is kept: the names of labels that overflowed are appended to ``overflow`` and the
        new values claimed in ``pending`` (``{label: values}``), for :meth:`admit` to keep.
        """
        result = []
        for label in self._common:
            value = label.value(values.get(label.name), pending)
            if value == OTHER:
                overflow.append(label.name)
            result.append(value)
        common = tuple(result)
        if common not in self.label_sets and len(self.label_sets) >= self.max_label_sets:
            overflow.append(LABEL_SET)
            return self.overflow_set
        return common

    def detail(self, name: str, raw: str | None, pending: dict[str, set[str]], overflow: list[str]) -> str:
        """The value of a detail label (tag, action, ...), planned like :meth:`common`."""
        value = self.labels[name].value(raw, pending)
        if value == OTHER:
            overflow.append(name)
        return value

    def admit(self, common: tuple[str, ...], details: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Keep the values a recorded summary used; returns what was new, ``(label, value)``, for an undo."""
        new: list[tuple[str, str]] = []
        for label, value in zip(self._common, common, strict=True):
            if label.admit(value):
                new.append((label.name, value))
        if common not in self.label_sets:
            self.label_sets.add(common)
            new.append((LABEL_SET, "\x00".join(common)))
        for name, value in details:
            if self.labels[name].admit(value):
                new.append((name, value))
        return new

    def forget(self, admitted: Iterable[tuple[str, str]]) -> None:
        """Undo :meth:`admit` (a summary whose recording failed)."""
        for name, value in admitted:
            if name == LABEL_SET:
                self.label_sets.discard(tuple(value.split("\x00")))
            else:
                self.labels[name].kept.discard(value)

    def worst_case_label_sets(self) -> int:
        """Most distinct common label sets the registry can hold: the budget, plus the overflow set."""
        product = 1
        for label in self._common:
            product *= (len(label.allowlist) if label.allowlist is not None else label.max_values) + 2  # + unknown, other
        return min(product, self.max_label_sets + 1)


# ---------------------------------------------------------------------------------------------
# Call Summaries (twilio_call_*). Each kind of summary has its own policy: its own caps, its own
# budget of label sets, its own kept values. A label name may mean something else in another
# kind's families (docs/metrics.md, "Labels"): ``country_code`` is the participant's own country in the
# participant families and the far end's in the call families.
# ---------------------------------------------------------------------------------------------
CALL_COMMON_LABELS = (*JOIN_LABELS, "call_type", "call_status", "direction", "media_region", "edge_location", "country_code", "carrier", "connection")

# Twilio documents these vocabularies (call-and-conference-summary-facts.md): anything else is
# 'other' at once, so a typo or a hostile value never takes a place. call_type's whatsapp
# appears only in newer specs.
CALL_ALLOWLISTS = {
    "call_type": frozenset({"carrier", "sip", "trunking", "client", "whatsapp"}),
    "call_status": frozenset({"ringing", "completed", "busy", "fail", "noanswer", "canceled", "answered", "undialed"}),
    "direction": frozenset({"inbound", "outbound_api", "outbound_dial", "trunking_originating", "trunking_terminating"}),
    "connection": frozenset({"mobile", "landline", "voip", "pstn", "twilio_sdk", "sip_interface"}),
    "answered_by": frozenset({"unknown", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "human", "fax"}),
    "sip_response_class": frozenset({"1xx", "2xx", "3xx", "4xx", "5xx", "6xx"}),
}

# Caps: an allowlisted label's cap is its list's length (the cap never binds). media_region:
# Twilio has nine; edge_location: about a dozen edges (ashburn, dublin, ...); country_code and
# carrier are the open ones, bounded by what a dashboard can still show; disconnected_by names a
# handful of parties; codec a handful of RTP codecs; tag Voice Insights' open list of call tags.
CALL_MAX_VALUES = {
    **{name: len(values) for name, values in CALL_ALLOWLISTS.items()},
    "media_region": 20,
    "edge_location": 30,
    "country_code": 100,
    "carrier": 50,
    "disconnected_by": 10,
    "codec": 10,
    "tag": 50,
    **JOIN_MAX_VALUES,
}

# A call label set is the costliest of the three kinds (every edge and direction, MOS and RTT
# stats, codecs): fewer sets than the participants' budget keep the call families' worst case in
# the same range (docs/metrics.md, computed from these caps).
# With the join labels: today's 300 plus two sets (the customer's and the agent's leg) per
# (queue, team) pair of a 50 x 20 centre.
CALL_MAX_LABEL_SETS = 300 + 2 * JOIN_LABEL_SETS


def call_label_policy(
    max_values: Mapping[str, int] | None = None,
    allowlists: Mapping[str, frozenset[str]] | None = None,
    max_label_sets: int = CALL_MAX_LABEL_SETS,
) -> LabelPolicy:
    """The bounded labels of the ``twilio_call_*`` families (defaults in code; overrides optional)."""
    return LabelPolicy(CALL_COMMON_LABELS, max_values, allowlists, max_label_sets, defaults=CALL_MAX_VALUES, default_allowlists=CALL_ALLOWLISTS)


# ---------------------------------------------------------------------------------------------
# Conference Summaries (twilio_conference_* without participant_). The common labels say where
# the conference mixed, how it ended and why: all three are documented vocabularies.
# ---------------------------------------------------------------------------------------------
CONFERENCE_COMMON_LABELS = (*JOIN_LABELS, "mixer_region", "status", "end_reason")

CONFERENCE_ALLOWLISTS = {
    "status": frozenset({"in_progress", "not_started", "completed", "summary_timeout"}),
    "end_reason": frozenset(
        {
            "last_participant_left",
            "conference_ended_via_api",
            "participant_with_end_conference_on_exit_left",
            "last_participant_kicked",
            "participant_with_end_conference_on_exit_kicked",
        }
    ),
    "processing_state": frozenset({"complete", "in_progress", "timeout"}),
    "category": frozenset({"call_quality", "region_configuration", "participant_behavior"}),
}

# mixer_region: nine documented regions, a cap rather than a list so a new region shows by name;
# tag: the documented twelve plus headroom (the list is open).
CONFERENCE_MAX_VALUES = {
    **{name: len(values) for name, values in CONFERENCE_ALLOWLISTS.items()},
    "mixer_region": 20,
    "tag": 30,
    **JOIN_MAX_VALUES,
}

# Without the join, at most (20 + 2) x (4 + 2) x (5 + 2) = 924 combinations exist; 300 sets bound
# them (docs/taskrouter.md); with it, one more set per (queue, team) pair of a 50 x 20 centre.
CONFERENCE_MAX_LABEL_SETS = 300 + JOIN_LABEL_SETS


def conference_label_policy(
    max_values: Mapping[str, int] | None = None,
    allowlists: Mapping[str, frozenset[str]] | None = None,
    max_label_sets: int = CONFERENCE_MAX_LABEL_SETS,
) -> LabelPolicy:
    """The bounded labels of the ``twilio_conference_*`` conference-summary families."""
    return LabelPolicy(
        CONFERENCE_COMMON_LABELS, max_values, allowlists, max_label_sets, defaults=CONFERENCE_MAX_VALUES, default_allowlists=CONFERENCE_ALLOWLISTS
    )
