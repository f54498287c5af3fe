"""The call subject: Call Summaries, ``twilio_call_*``: its families and buckets, and its plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from exporter.models import CallSummary, EdgeStream
from exporter.record.families import CounterFamily, HistogramFamily
from exporter.record.labels import LabelPolicy
from exporter.record.recorder import Change, Draft, Observation, SummaryRecorder, distinct, sid_exemplar
from exporter.subjects.common import JOIN_LABEL_SETS, JOIN_LABELS, JOIN_MAX_VALUES
from exporter.subjects.thresholds import (
    CALL_DURATION_BUCKETS,
    JITTER_BUCKETS,
    MOS_BUCKETS,
    PACKET_LOSS_BUCKETS,
    POST_DIAL_DELAY_BUCKETS,
    QUEUE_TIME_BUCKETS,
    RTT_BUCKETS,
)

NAME = "call"
PREFIX = "twilio_call"

CALL_SUMMARIES = f"{PREFIX}_summaries"
SUMMARIES = CALL_SUMMARIES  # the family that counts this subject's summaries
CALL_JITTER = f"{PREFIX}_jitter_seconds"
CALL_PACKET_LOSS = f"{PREFIX}_packet_loss_ratio"
CALL_PACKETS = f"{PREFIX}_packets"
CALL_PACKETS_LOST = f"{PREFIX}_packets_lost"
CALL_MOS = f"{PREFIX}_mos"
CALL_RTT = f"{PREFIX}_rtt_seconds"
CALL_POST_DIAL_DELAY = f"{PREFIX}_post_dial_delay_seconds"
CALL_DURATION = f"{PREFIX}_duration_seconds"
CALL_QUEUE_TIME = f"{PREFIX}_queue_time_seconds"
CALL_TAGS = f"{PREFIX}_tags"
CALL_SIP_RESPONSES = f"{PREFIX}_sip_responses"
CALL_DISCONNECTS = f"{PREFIX}_disconnects"
CALL_ANSWERED_BY = f"{PREFIX}_answered_by"
CALL_CODECS = f"{PREFIX}_codecs"

# The `edge` label of the call families: where on the call's path Twilio measured.
EDGES = ("carrier_edge", "sip_edge", "sdk_edge", "client_edge")

CALL_DEFAULT_BUCKETS = {
    "mos": MOS_BUCKETS,
    "jitter": JITTER_BUCKETS,
    "packet_loss": PACKET_LOSS_BUCKETS,
    "rtt": RTT_BUCKETS,
    "post_dial_delay": POST_DIAL_DELAY_BUCKETS,
    "duration": CALL_DURATION_BUCKETS,
    "queue_time": QUEUE_TIME_BUCKETS,
}


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
    return LabelPolicy(
        CALL_COMMON_LABELS, max_values, allowlists, max_label_sets=max_label_sets, defaults=CALL_MAX_VALUES, default_allowlists=CALL_ALLOWLISTS
    )


@dataclass(frozen=True, slots=True)
class CallMetrics:
    """What Twilio measured on one call, per edge and direction where it measured there."""

    summaries: CounterFamily
    jitter: HistogramFamily
    packet_loss: HistogramFamily
    packets: CounterFamily
    packets_lost: CounterFamily
    mos: HistogramFamily
    rtt: HistogramFamily
    post_dial_delay: HistogramFamily
    duration: HistogramFamily
    queue_time: HistogramFamily
    tags: CounterFamily
    sip_responses: CounterFamily
    disconnects: CounterFamily
    answered_by: CounterFamily
    codecs: CounterFamily


def build_call_metrics(
    registry: CollectorRegistry, common_labels: tuple[str, ...], buckets: dict[str, tuple[float, ...]] | None = None
) -> CallMetrics:
    """Create the twilio_call_* families with ``common_labels`` first."""
    b = {**CALL_DEFAULT_BUCKETS, **(buckets or {})}
    common = list(common_labels)
    edge = [*common, "edge", "stream"]
    edge_stat = [*edge, "stat"]

    def counter(name: str, doc: str, labels: list[str]) -> CounterFamily:
        return CounterFamily(name, doc, labels, registry)

    def histogram(name: str, doc: str, labels: list[str], key: str) -> HistogramFamily:
        return HistogramFamily(name, doc, labels, registry, buckets=b[key])

    return CallMetrics(
        summaries=counter(CALL_SUMMARIES, "Call summaries recorded, each call exactly once (from its complete summary).", common),
        jitter=histogram(CALL_JITTER, "Jitter of a call's media at one edge and direction, average or maximum.", edge_stat, "jitter"),
        packet_loss=histogram(CALL_PACKET_LOSS, "Packet loss of a call's media at one edge and direction, as a ratio.", edge, "packet_loss"),
        packets=counter(CALL_PACKETS, "RTP packets of calls at one edge: received (inbound) or sent (outbound).", edge),
        packets_lost=counter(CALL_PACKETS_LOST, "RTP packets lost at one edge and direction, summed over calls.", edge),
        mos=histogram(CALL_MOS, "Mean opinion score the Voice SDK computed for a call (SDK edge), average or minimum.", edge_stat, "mos"),
        rtt=histogram(CALL_RTT, "Round-trip time the Voice SDK measured to Twilio (SDK edge), average or maximum.", edge_stat, "rtt"),
        post_dial_delay=histogram(CALL_POST_DIAL_DELAY, "Post-dial delay: from dialling to the far end ringing.", common, "post_dial_delay"),
        duration=histogram(CALL_DURATION, "Connect duration of a call: from answer to hang-up (0 when never answered).", common, "duration"),
        queue_time=histogram(CALL_QUEUE_TIME, "Time a call spent queued at Twilio before it was placed.", common, "queue_time"),
        tags=counter(CALL_TAGS, "Voice Insights tags (detected issues) of calls.", [*common, "tag"]),
        sip_responses=counter(CALL_SIP_RESPONSES, "Calls by the class of their last SIP response (2xx, 4xx, ...).", [*common, "sip_response_class"]),
        disconnects=counter(CALL_DISCONNECTS, "Calls by who hung up.", [*common, "disconnected_by"]),
        answered_by=counter(CALL_ANSWERED_BY, "Calls by who answered, as answering machine detection decided.", [*common, "answered_by"]),
        codecs=counter(CALL_CODECS, "Codec of a call's media at one edge and direction.", [*edge, "codec"]),
    )


class CallRecorder(SummaryRecorder[CallMetrics]):
    """Records final Call Summaries into the ``twilio_call_*`` families (labels: :func:`call_label_policy`).

    Twilio's milliseconds become seconds and its percentages ratios. What an edge did not
    measure is not recorded: an absent edge, an edge without metrics, one direction only leave
    no sample rather than a zero. The SIP edge's ``latency`` is left out: its unit is not
    documented (call-and-conference-summary-facts.md).
    """

    def __init__(self, registry: CollectorRegistry, labels: LabelPolicy, buckets: Mapping[str, tuple[float, ...]] | None = None) -> None:
        super().__init__(labels, build_call_metrics(registry, labels.common_names, dict(buckets or {})))

    def plan(self, summary: CallSummary, joined: Mapping[str, str | None] | None = None) -> Change:
        """What recording ``summary`` would add. Changes nothing."""
        m = self.metrics
        draft = Draft(self.labels)
        far = summary.far_end()
        props = summary.properties
        common = draft.common(
            {
                **(joined or {}),
                "call_type": summary.call_type,
                "call_status": summary.call_state,
                "direction": props.direction if props is not None else None,
                "media_region": summary.edge_property("media_region"),
                "edge_location": summary.edge_property("edge_location"),
                "country_code": far.country_code if far is not None else None,
                "carrier": far.carrier if far is not None else None,
                "connection": far.connection if far is not None else None,
            }
        )
        obs: list[Observation] = [(m.summaries, (), 1)]
        for edge_name, edge in summary.edges():
            if edge.metrics is None:
                continue
            for stream, es in (("inbound", edge.metrics.inbound), ("outbound", edge.metrics.outbound)):
                if es is not None:
                    self._plan_edge_stream(obs, draft, (edge_name, stream), es)
        if summary.connect_duration is not None:
            obs.append((m.duration, (), summary.connect_duration))
        if props is not None:
            if props.pdd_ms is not None:
                obs.append((m.post_dial_delay, (), props.pdd_ms / 1000))
            if props.queue_time is not None:
                obs.append((m.queue_time, (), props.queue_time / 1000))
            if props.last_sip_response_num is not None:
                obs.append((m.sip_responses, (draft.detail("sip_response_class", f"{props.last_sip_response_num // 100}xx"),), 1))
            if props.disconnected_by is not None:
                obs.append((m.disconnects, (draft.detail("disconnected_by", props.disconnected_by),), 1))
        if summary.answered_by is not None:
            obs.append((m.answered_by, (draft.detail("answered_by", summary.answered_by),), 1))
        # A tag says "this call had that condition": once, however often listed.
        for tag in distinct(draft.detail, "tag", summary.tags):
            obs.append((m.tags, (tag,), 1))
        return draft.change(common, obs, sid_exemplar("call_sid", summary.call_sid))

    def _plan_edge_stream(self, obs: list[Observation], draft: Draft, where: tuple[str, str], es: EdgeStream) -> None:
        m = self.metrics
        if es.jitter is not None:
            if es.jitter.avg is not None:
                obs.append((m.jitter, (*where, "avg"), es.jitter.avg / 1000))
            if es.jitter.max is not None:
                obs.append((m.jitter, (*where, "max"), es.jitter.max / 1000))
        if es.packets_loss_percentage is not None:
            obs.append((m.packet_loss, where, es.packets_loss_percentage / 100))
        # Packets received on the way in, sent on the way out: the count the loss is out of.
        packets = es.packets_received if where[1] == "inbound" else es.packets_sent
        if packets is not None:
            obs.append((m.packets, where, packets))
        if es.packets_lost is not None:
            obs.append((m.packets_lost, where, es.packets_lost))
        if es.mos is not None:
            if es.mos.avg is not None:
                obs.append((m.mos, (*where, "avg"), es.mos.avg))
            if es.mos.min is not None:
                obs.append((m.mos, (*where, "min"), es.mos.min))
        if es.rtt is not None:
            if es.rtt.avg is not None:
                obs.append((m.rtt, (*where, "avg"), es.rtt.avg / 1000))
            if es.rtt.max is not None:
                obs.append((m.rtt, (*where, "max"), es.rtt.max / 1000))
        if es.codec_name is not None:
            obs.append((m.codecs, (*where, draft.detail("codec", es.codec_name.lower())), 1))
