"""The "Twilio call quality" dashboard: Call Summaries per edge, carrier, country and edge location, and Conference Summaries.

What Twilio's Call Insights page shows (volume, quality past thresholds per edge, post-dial
delay, who hung up, failed calls, tags), from Prometheus, with breakdowns by any common call
label, the slices furthest above the account, and a row on whole conferences (how they ended,
how long, how many took part, which issues).

The ``edge`` variable filters the families measured per edge; the other call variables filter
every call family; the conference row is filtered by scrape target only.
"""

from __future__ import annotations

from typing import Any

from exporter.subjects import call as call_subject
from exporter.subjects import conference as conference_subject
from exporter.subjects.call import CALL_COMMON_LABELS

from . import call_rules, settings
from .grafana import (
    Cell,
    Section,
    custom_variable,
    dashboard,
    datasource_variable,
    heatmap,
    noted,
    query,
    query_variable,
    stat,
    table,
    thresholds,
    timeseries,
)
from .promql import PANEL_DATA_AGE, TARGET_VARIABLES, QualityThreshold, by, selector, variable_matchers

UID = call_rules.UID
FILE = "twilio-call-quality.json"
RATE = "$__rate_interval"
RANGE = "$__range"
CALL_FILTERS = variable_matchers(TARGET_VARIABLES + CALL_COMMON_LABELS)
EDGE_FILTERS = (*CALL_FILTERS, 'edge=~"$edge"')
TARGET_FILTERS = variable_matchers(TARGET_VARIABLES)
BREAKDOWN = ("$breakdown",)
# call_state values of a call that never connected (call-and-conference-summary-facts.md).
NOT_CONNECTED = ("fail", "busy", "noanswer", "canceled")
NOT_CONNECTED_MATCHER = f'call_status=~"{"|".join(NOT_CONNECTED)}"'


def sel(*extra: str) -> str:
    return selector(*CALL_FILTERS, *extra)


def per_minute(metric: str, group: tuple[str, ...] = (), filters: tuple[str, ...] = CALL_FILTERS, *extra: str) -> str:
    return f"sum{by(group)}(rate({metric}_total{selector(*filters, *extra)}[{RATE}])) * 60"


def calls_share(matcher: str, group: tuple[str, ...] = (), window: str = RATE) -> str:
    """Share of calls whose summary matches ``matcher``, per ``group``."""
    total = f"sum{by(group)}(rate({call_subject.CALL_SUMMARIES}_total{sel()}[{window}]))"
    return f"sum{by(group)}(rate({call_subject.CALL_SUMMARIES}_total{sel(matcher)}[{window}])) / {total}"


def overview() -> Section:
    cells = [
        Cell(
            stat(
                "Calls",
                "Calls recorded in the selected time range (one complete Call Summary each).",
                query(f"sum(increase({call_subject.CALL_SUMMARIES}_total{sel()}[{RANGE}]))", instant=True),
                "short",
                thresholds((None, "blue")),
                decimals=0,
            ),
            4,
            4,
        ),
        Cell(
            stat(
                "Not connected",
                f"Share of calls that never connected ({', '.join(NOT_CONNECTED)}), over the selected range.",
                query(f"({calls_share(NOT_CONNECTED_MATCHER, window=RANGE)}) or vector(0)", instant=True),
                "percentunit",
                thresholds((None, "blue")),
            ),
            4,
            4,
        ),
    ]
    for threshold in call_rules.SIGNALS:
        cells.append(
            Cell(
                stat(
                    threshold.title,
                    f"Share of call media streams (every selected edge and direction) with {threshold.title} over the selected range. "
                    f"Red from {settings.QUALITY_ALERT_SHARE:.0%}, the share at which the slice alerts fire.",
                    query(threshold.share(RANGE, EDGE_FILTERS), instant=True),
                    "percentunit",
                    thresholds((None, "green"), (settings.QUALITY_ALERT_SHARE, "red")),
                ),
                4,
                4,
            )
        )
    return Section("Overview", cells)


def per_edge() -> Section:
    cells = [
        Cell(
            timeseries(
                f"{threshold.title} by edge",
                f"Share of call media streams with {threshold.title}, by the edge Twilio measured it at. The dashed line is the alert share.",
                [query(threshold.share(RATE, EDGE_FILTERS, ("edge",)), "{{edge}}")],
                "percentunit",
                maximum=1,
                threshold=settings.QUALITY_ALERT_SHARE,
            ),
            6,
        )
        for threshold in call_rules.SIGNALS
    ]
    cells.append(
        Cell(
            timeseries(
                "Packets lost by edge and direction",
                "RTP packets lost over packets received (inbound) or sent (outbound), summed over calls.",
                [
                    query(
                        f"sum by (edge, stream) (rate({call_subject.CALL_PACKETS_LOST}_total{selector(*EDGE_FILTERS)}[{RATE}])) / "
                        f"sum by (edge, stream) (rate({call_subject.CALL_PACKETS}_total{selector(*EDGE_FILTERS)}[{RATE}]))",
                        "{{edge}} {{stream}}",
                    )
                ],
                "percentunit",
            ),
            12,
        )
    )
    cells.append(
        Cell(
            timeseries(
                "Codecs by edge",
                "Calls' media streams per minute by codec, per edge and direction.",
                [query(per_minute(call_subject.CALL_CODECS, ("edge", "stream", "codec"), EDGE_FILTERS), "{{edge}} {{stream}} {{codec}}")],
                "cpm",
                stack=True,
            ),
            12,
        )
    )
    return Section("Quality per edge", cells)


def breakdown() -> Section:
    cells = [
        Cell(
            timeseries(
                "Calls per minute by $breakdown",
                "Calls recorded per minute, by the label chosen in the `breakdown` variable (carrier, country_code, edge_location, ...).",
                [query(per_minute(call_subject.CALL_SUMMARIES, BREAKDOWN))],
                "cpm",
                stack=True,
            )
        ),
        Cell(
            timeseries(
                "Not connected by $breakdown",
                f"Share of calls that never connected ({', '.join(NOT_CONNECTED)}), by the chosen label.",
                [query(calls_share(NOT_CONNECTED_MATCHER, BREAKDOWN))],
                "percentunit",
                maximum=1,
            )
        ),
    ]
    cells += [
        Cell(
            timeseries(
                f"{threshold.title} by $breakdown",
                f"Share of call media streams with {threshold.title} at the selected edges, by the chosen label.",
                [query(threshold.share(RATE, EDGE_FILTERS, BREAKDOWN))],
                "percentunit",
                maximum=1,
                threshold=settings.QUALITY_ALERT_SHARE,
            )
        )
        for threshold in call_rules.SIGNALS
    ]
    return Section("Breakdown by $breakdown", cells)


def slice_excess(threshold: QualityThreshold, dimension: str) -> str:
    """How far each (edge, value of ``dimension``) sits above the edge's share for the whole selection, past the volume guard."""
    group = ("edge", dimension)
    excess = (
        f"({threshold.share(RANGE, EDGE_FILTERS, group)}) - on (edge) group_left () ({threshold.share(RANGE, EDGE_FILTERS, ('edge',))})"
        f" and on (edge, {dimension}) ({threshold.count(RANGE, EDGE_FILTERS, group)}) >= {settings.QUALITY_MIN_STREAMS}"
    )
    labelled = f'label_replace({excess}, "slice", "$1", "{dimension}", "(.*)")'
    labelled = f'label_replace({labelled}, "dimension", "{dimension}", "", "")'
    return f'label_replace({labelled}, "signal", "{threshold.tag}", "", "")'


def where_is_it_worse() -> Section:
    ranking = " or ".join(
        f"({slice_excess(threshold, dimension)})" for threshold in call_rules.SIGNALS for dimension in settings.CALL_SLICE_DIMENSIONS
    )
    return Section(
        "Where is it worse",
        [
            Cell(
                table(
                    "Call slices furthest above their edge",
                    f"Every value of each slice dimension of the call alerts ({', '.join(settings.CALL_SLICE_DIMENSIONS)}) at each edge, "
                    "ranked by how far its share of streams past a threshold sits above the same edge's share for the whole "
                    f"selection, over the selected range (in points). Slices with fewer than {settings.QUALITY_MIN_STREAMS} streams "
                    "are left out.",
                    query(f"topk(15, sum by (signal, edge, dimension, slice) ({ranking}))", instant=True),
                    "percentunit",
                    thresholds((None, "green"), (0, "orange"), (settings.QUALITY_ALERT_SHARE, "red")),
                    sort_by="above the edge",
                ),
                24,
                9,
            )
        ],
    )


def distributions() -> Section:
    cells = []
    for metric, title, unit, stat_value, percentiles in (
        (call_subject.CALL_MOS, "MOS (Voice SDK)", "none", "avg", (0.05, 0.25, 0.5)),
        (call_subject.CALL_JITTER, "Average jitter", "s", "avg", (0.5, 0.9, 0.99)),
        (call_subject.CALL_RTT, "Average round trip (Voice SDK)", "s", "avg", (0.5, 0.9, 0.99)),
    ):
        matchers = (*EDGE_FILTERS, f'stat="{stat_value}"')
        cells += [
            Cell(
                heatmap(
                    title,
                    f"Distribution of {title.lower()} over time at the selected edges. Exemplar dots lead to the call: hover one for its call_sid.",
                    query(f"sum by (le) (rate({metric}_bucket{selector(*matchers)}[{RATE}]))", "{{le}}", exemplar=True, heatmap=True),
                    unit,
                ),
                12,
            ),
            Cell(
                timeseries(
                    f"{title} percentiles by edge",
                    f"Percentiles of {title.lower()} per edge, interpolated within the buckets.",
                    [
                        query(
                            f"histogram_quantile({q}, sum by (le, edge) (rate({metric}_bucket{selector(*matchers)}[{RATE}])))",
                            f"p{q * 100:g} {{{{edge}}}}",
                            exemplar=True,
                        )
                        for q in percentiles
                    ],
                    unit,
                ),
                12,
            ),
        ]
    return Section("Distributions (exemplars lead to the call)", cells)


def delay_and_duration() -> Section:
    cells = [
        Cell(
            heatmap(
                "Post-dial delay",
                "Distribution of the post-dial delay (dialling to the far end ringing). Exemplar dots lead to the call.",
                query(f"sum by (le) (rate({call_subject.CALL_POST_DIAL_DELAY}_bucket{sel()}[{RATE}]))", "{{le}}", exemplar=True, heatmap=True),
                "s",
            ),
            8,
        ),
        Cell(
            timeseries(
                "Post-dial delay p90 by $breakdown",
                "The 90th percentile of the post-dial delay by the chosen label (carrier and country are where it usually differs).",
                [query(f"histogram_quantile(0.9, sum by (le, $breakdown) (rate({call_subject.CALL_POST_DIAL_DELAY}_bucket{sel()}[{RATE}])))")],
                "s",
            ),
            8,
        ),
        Cell(
            timeseries(
                "Connect duration and queue time",
                "Median and 90th percentile of the connect duration (answer to hang-up) and of the time queued at Twilio.",
                [
                    query(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{sel()}[{RATE}])))", f"{name} p{q * 100:g}")
                    for metric, name in ((call_subject.CALL_DURATION, "duration"), (call_subject.CALL_QUEUE_TIME, "queue"))
                    for q in (0.5, 0.9)
                ],
                "s",
            ),
            8,
        ),
    ]
    return Section("Post-dial delay, duration and queue time", cells)


def outcomes() -> Section:
    return Section(
        "How calls ended",
        [
            Cell(
                timeseries(
                    "Calls per minute by status",
                    "Calls by their final call_state: completed, busy, fail, noanswer, canceled, ...",
                    [query(per_minute(call_subject.CALL_SUMMARIES, ("call_status",)), "{{call_status}}")],
                    "cpm",
                    stack=True,
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Last SIP response class",
                    "Calls per minute by the class of their last SIP response (4xx, 5xx, 6xx are failures at the far end or on the way).",
                    [query(per_minute(call_subject.CALL_SIP_RESPONSES, ("sip_response_class",)), "{{sip_response_class}}")],
                    "cpm",
                    stack=True,
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Who hung up",
                    "Calls per minute by who disconnected (caller, callee, ...).",
                    [query(per_minute(call_subject.CALL_DISCONNECTS, ("disconnected_by",)), "{{disconnected_by}}")],
                    "cpm",
                    stack=True,
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Answered by",
                    "Calls per minute by who answered, as answering machine detection decided (only calls that asked for it).",
                    [query(per_minute(call_subject.CALL_ANSWERED_BY, ("answered_by",)), "{{answered_by}}")],
                    "cpm",
                    stack=True,
                ),
                12,
            ),
            Cell(
                timeseries(
                    "Call tags per minute",
                    "Voice Insights tags of calls (high_pdd, high_jitter, high_packet_loss, silence, ...).",
                    [query(per_minute(call_subject.CALL_TAGS, ("tag",)), "{{tag}}")],
                    "cpm",
                    stack=True,
                ),
                12,
            ),
        ],
    )


def conferences() -> Section:
    target = selector(*TARGET_FILTERS)
    return Section(
        "Conferences",
        [
            Cell(
                timeseries(
                    "Conferences per minute by end reason",
                    "Conferences ended per minute (one final Conference Summary each), by why they ended.",
                    [query(per_minute(conference_subject.CONFERENCE_SUMMARIES, ("end_reason",), TARGET_FILTERS), "{{end_reason}}")],
                    "cpm",
                    stack=True,
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Conferences per minute by status and processing state",
                    "`not_started` conferences never had two participants; `timeout` summaries may lack data.",
                    [
                        query(
                            per_minute(conference_subject.CONFERENCE_SUMMARIES, ("status", "processing_state"), TARGET_FILTERS),
                            "{{status}} / {{processing_state}}",
                        )
                    ],
                    "cpm",
                    stack=True,
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Conference length",
                    "Median and 90th percentile of how long conferences lasted, by mixer region.",
                    [
                        query(
                            f"histogram_quantile({q}, sum by (le, mixer_region) (rate({conference_subject.CONFERENCE_DURATION}_bucket{target}[{RATE}])))",
                            f"p{q * 100:g} {{{{mixer_region}}}}",
                            exemplar=True,
                        )
                        for q in (0.5, 0.9)
                    ],
                    "s",
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Participants at once",
                    "Median and 90th percentile of the most participants a conference had at once.",
                    [
                        query(
                            f"histogram_quantile({q}, sum by (le) (rate({conference_subject.CONFERENCE_CONCURRENT}_bucket{target}[{RATE}])))",
                            f"p{q * 100:g}",
                        )
                        for q in (0.5, 0.9)
                    ],
                    "short",
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Detected issues per conference by category",
                    "Issues Voice Insights detected per conference: call_quality, region_configuration, participant_behavior.",
                    [
                        query(
                            f"sum by (category) (rate({conference_subject.CONFERENCE_ISSUES}_total{target}[{RATE}])) / on () group_left () "
                            f"sum(rate({conference_subject.CONFERENCE_SUMMARIES}_total{target}[{RATE}]))",
                            "{{category}}",
                        )
                    ],
                    "short",
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Conference tags per minute",
                    "Voice Insights tags of conferences (quality_warnings, start_failure, region_configuration_issues, ...).",
                    [query(per_minute(conference_subject.CONFERENCE_TAGS, ("tag",), TARGET_FILTERS), "{{tag}}")],
                    "cpm",
                    stack=True,
                ),
                8,
            ),
        ],
    )


def variables() -> list[dict[str, Any]]:
    found_in = f"{call_subject.CALL_SUMMARIES}_total"
    result = [
        datasource_variable(),
        query_variable("job", f"label_values({found_in}, job)"),
        query_variable("instance", f'label_values({found_in}{{job=~"$job"}}, instance)'),
    ]
    result += [
        query_variable(name, f'label_values({found_in}{{job=~"$job", instance=~"$instance"}}, {name})', label=name.replace("_", " "))
        for name in CALL_COMMON_LABELS
    ]
    result += [
        query_variable("edge", f'label_values({call_subject.CALL_PACKETS}_total{{job=~"$job", instance=~"$instance"}}, edge)', label="edge"),
        custom_variable("breakdown", CALL_COMMON_LABELS, label="breakdown", description="The label the breakdown panels split by."),
    ]
    return result


def build(generated: str) -> dict[str, Any]:
    """The whole dashboard as a JSON-ready dict."""
    return dashboard(
        uid=UID,
        title="Twilio call quality",
        description="Twilio Voice Insights Call Summaries (per edge: carrier, SIP, Voice SDK, client) and Conference Summaries.",
        generated=generated,
        variables=variables(),
        sections=noted(
            [overview(), where_is_it_worse(), per_edge(), breakdown(), distributions(), delay_and_duration(), outcomes(), conferences()],
            PANEL_DATA_AGE,
        ),
        tags=["twilio-insights", "twilio", "voice"],
    )
