"""The "Twilio conference quality" dashboard: what Twilio's Conference Insights page shows, from Prometheus.

It answers the questions of Twilio's own dashboard (volume, share of participants with quality
warnings, region configuration issues, silent participants, MOS/jitter/latency/loss) and adds what
only a time series database can: distributions over time with exemplars leading to the call, and
breakdowns by any common label.
"""

from __future__ import annotations

from typing import Any

from exporter.join import JOIN_TOTAL
from exporter.subjects import participant as participant_subject
from exporter.subjects import thresholds as twilio_thresholds
from exporter.subjects.common import JOIN_LABELS

from . import settings
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
from .promql import (
    BREAKDOWN_LABELS,
    LABEL_VARIABLES,
    OBJECTIVE,
    PANEL_DATA_AGE,
    QUALITY_THRESHOLDS,
    TARGET_VARIABLES,
    QualityThreshold,
    burn_factor,
    by,
    selector,
    variable_matchers,
)

UID = "twilio-conference-quality"
FILE = "twilio-conference-quality.json"
RATE = "$__rate_interval"
RANGE = "$__range"
FILTERS = variable_matchers(TARGET_VARIABLES + LABEL_VARIABLES)
BREAKDOWN = ("$breakdown",)
SILENT = 'tag="silent"'

# "Has at least one quality warning": the per-participant issue count is above its 0 bucket.
WARNED = QualityThreshold("quality_issues", "quality_warning", participant_subject.QUALITY_ISSUES, 0.0, False, "With a quality warning")

UNITS = {
    participant_subject.MOS: "none",
    participant_subject.JITTER: "s",
    participant_subject.LATENCY: "s",
    participant_subject.PACKET_LOSS: "percentunit",
}
NAMES = {
    participant_subject.MOS: "MOS",
    participant_subject.JITTER: "Jitter",
    participant_subject.LATENCY: "Latency",
    participant_subject.PACKET_LOSS: "Packet loss",
}
# Low MOS is bad, so its interesting percentiles are the low ones; for the others, the high ones.
PERCENTILES = {
    participant_subject.MOS: (0.05, 0.25, 0.5),
    participant_subject.JITTER: (0.5, 0.9, 0.99),
    participant_subject.LATENCY: (0.5, 0.9, 0.99),
    participant_subject.PACKET_LOSS: (0.5, 0.9, 0.99),
}
# Jitter and latency are observed as both the average and the maximum of a stream.
HAS_STAT = {participant_subject.JITTER, participant_subject.LATENCY}


def sel(*extra: str) -> str:
    """The dashboard's filters plus ``extra`` matchers."""
    return selector(*FILTERS, *extra)


def per_minute(metric: str, group: tuple[str, ...] = (), *extra: str) -> str:
    return f"sum{by(group)}(rate({metric}_total{sel(*extra)}[{RATE}])) * 60"


def per_summary(numerator: str, group: tuple[str, ...] = (), window: str = RATE) -> str:
    """A counter's rate divided by the rate of summaries: "per participant".

    Summaries carry no ``stream`` label, so a per-stream numerator divides by all summaries.
    """
    if "stream" in group:
        return f"sum{by(group)}(rate({numerator}[{window}])) / on () group_left () sum(rate({participant_subject.SUMMARIES}_total{sel()}[{window}]))"
    return f"sum{by(group)}(rate({numerator}[{window}])) / sum{by(group)}(rate({participant_subject.SUMMARIES}_total{sel()}[{window}]))"


def share_steps(alerting: bool) -> dict[str, Any]:
    if alerting:
        return thresholds((None, "green"), (settings.QUALITY_ALERT_SHARE, "red"))
    return thresholds((None, "blue"))


def overview() -> Section:
    cells = [
        Cell(
            stat(
                "Summaries",
                "Participant summaries recorded in the selected time range (one per participant per conference).",
                query(f"sum(increase({participant_subject.SUMMARIES}_total{sel()}[{RANGE}]))", instant=True),
                "short",
                thresholds((None, "blue")),
                decimals=0,
            ),
            3,
            4,
        ),
        Cell(
            stat(
                "With a quality warning",
                "Share of participants for which Voice Insights detected at least one quality issue, over the selected range.",
                query(WARNED.share(RANGE, FILTERS), instant=True),
                "percentunit",
                share_steps(False),
            ),
            3,
            4,
        ),
    ]
    for threshold in QUALITY_THRESHOLDS:
        cells.append(
            Cell(
                stat(
                    threshold.title,
                    f"Share of media streams (inbound and outbound) with {threshold.title}, Twilio's threshold, over the "
                    f"selected range. Red from {settings.QUALITY_ALERT_SHARE:.0%}, the share at which the alert fires.",
                    query(threshold.share(RANGE, FILTERS), instant=True),
                    "percentunit",
                    share_steps(True),
                ),
                3,
                4,
            )
        )
    cells += [
        Cell(
            stat(
                "Region mismatch",
                "Share of participants whose media region differs from the conference's mixer region (a region configuration issue: media crosses regions).",
                query(per_summary(f"{participant_subject.REGION_MISMATCH}_total{sel()}", window=RANGE), instant=True),
                "percentunit",
                share_steps(False),
            ),
            3,
            4,
        ),
        Cell(
            stat(
                "Silent streams",
                "Streams tagged `silent` by Voice Insights, per participant, over the selected range.",
                query(per_summary(f"{participant_subject.TAGS}_total{sel(SILENT)}", window=RANGE), instant=True),
                "percentunit",
                share_steps(False),
            ),
            3,
            4,
        ),
    ]
    return Section("Overview", cells)


def thresholds_over_time() -> Section:
    cells = [
        Cell(
            timeseries(
                f"{threshold.title}: share of streams",
                f"Share of media streams with {threshold.title} (Twilio's threshold), by stream direction. The dashed "
                f"line is the alert threshold ({settings.QUALITY_ALERT_SHARE:.0%} over {settings.QUALITY_WINDOW}).",
                [query(threshold.share(RATE, FILTERS, ("stream",)), "{{stream}}")],
                "percentunit",
                maximum=1,
                threshold=settings.QUALITY_ALERT_SHARE,
            )
        )
        for threshold in QUALITY_THRESHOLDS
    ]
    cells += [
        Cell(
            timeseries(
                "Participants with a quality warning",
                "Share of participants for which Voice Insights detected at least one quality issue.",
                [query(WARNED.share(RATE, FILTERS), "with a warning")],
                "percentunit",
                maximum=1,
            )
        ),
        Cell(
            timeseries(
                "Packets lost, all participants",
                "RTP packets lost over packets received, summed over every participant: the loss a listener hears on average.",
                [
                    query(
                        f"sum by (stream) (rate({participant_subject.PACKETS_LOST}_total{sel()}[{RATE}])) / sum by (stream) (rate({participant_subject.PACKETS_RECEIVED}_total{sel()}[{RATE}]))",
                        "{{stream}}",
                    )
                ],
                "percentunit",
            )
        ),
    ]
    return Section("Quality past Twilio's thresholds", cells)


def distributions() -> Section:
    cells = []
    for metric in (participant_subject.MOS, participant_subject.JITTER, participant_subject.LATENCY, participant_subject.PACKET_LOSS):
        name, unit = NAMES[metric], UNITS[metric]
        stat_matcher = ('stat="$stat"',) if metric in HAS_STAT else ()
        which = " ($stat)" if metric in HAS_STAT else ""
        for stream in participant_subject.STREAMS:
            stream_matcher = f'stream="{stream}"'
            cells.append(
                Cell(
                    heatmap(
                        f"{name}{which}, {stream}",
                        f"Distribution of {name.lower()} of {stream} streams over time. Exemplar dots lead to a call: "
                        "hover one for its call_sid and conference_sid.",
                        query(
                            f"sum by (le) (rate({metric}_bucket{sel(stream_matcher, *stat_matcher)}[{RATE}]))",
                            "{{le}}",
                            exemplar=True,
                            heatmap=True,
                        ),
                        unit,
                    ),
                    8,
                )
            )
        cells.append(
            Cell(
                timeseries(
                    f"{name}{which} percentiles",
                    f"Percentiles of {name.lower()} by stream direction, interpolated within the buckets.",
                    [
                        query(
                            f"histogram_quantile({q}, sum by (le, stream) (rate({metric}_bucket{sel(*stat_matcher)}[{RATE}])))",
                            f"p{q * 100:g} {{{{stream}}}}",
                            exemplar=True,
                        )
                        for q in PERCENTILES[metric]
                    ],
                    unit,
                    maximum=1 if metric == participant_subject.PACKET_LOSS else None,
                ),
                8,
            )
        )
    return Section("Distributions (exemplars lead to the call)", cells)


def breakdown() -> Section:
    cells = [
        Cell(
            timeseries(
                "Summaries per minute by $breakdown",
                "Participant summaries recorded per minute, by the label chosen in the `breakdown` variable.",
                [query(per_minute(participant_subject.SUMMARIES, BREAKDOWN))],
                "cpm",
                stack=True,
            )
        ),
        Cell(
            timeseries(
                "With a quality warning by $breakdown",
                "Share of participants with at least one quality issue, by the chosen label.",
                [query(WARNED.share(RATE, FILTERS, BREAKDOWN))],
                "percentunit",
                maximum=1,
            )
        ),
    ]
    cells += [
        Cell(
            timeseries(
                f"{threshold.title} by $breakdown",
                f"Share of media streams with {threshold.title}, by the chosen label.",
                [query(threshold.share(RATE, FILTERS, BREAKDOWN))],
                "percentunit",
                maximum=1,
                threshold=settings.QUALITY_ALERT_SHARE,
            )
        )
        for threshold in QUALITY_THRESHOLDS
    ]
    return Section("Breakdown by $breakdown", cells)


def queues_and_teams() -> Section:
    """Flex: the TaskRouter join's labels (exporter/join.py), the first question of a bad hour: which queue, which team."""
    cells = []
    for name, title in (("task_queue", "queue"), ("team", "team")):
        cells.append(
            Cell(
                timeseries(
                    f"Summaries per minute by {title}",
                    f"Participant summaries recorded per minute, by the {name} the TaskRouter join gave them (unknown: no TaskRouter event "
                    "of the call was received before its summary).",
                    [query(per_minute(participant_subject.SUMMARIES, (name,)))],
                    "cpm",
                    stack=True,
                )
            )
        )
        cells += [
            Cell(
                timeseries(
                    f"{threshold.title} by {title}",
                    f"Share of media streams with {threshold.title}, by {name}: an agent's leg counts in the queue and team of the "
                    "reservation that agent accepted, the customer's leg in the queue the call entered (docs/taskrouter.md).",
                    [query(threshold.share(RATE, FILTERS, (name,)))],
                    "percentunit",
                    maximum=1,
                    threshold=settings.QUALITY_ALERT_SHARE,
                )
            )
            for threshold in QUALITY_THRESHOLDS[:1]
        ]
    joins = selector(*joins_matchers())
    hits = selector(*joins_matchers(), 'result="hit"')
    cells.append(
        Cell(
            timeseries(
                "TaskRouter join hits by kind",
                "Share of the summaries recorded whose call the TaskRouter join knew. Near 0 with Flex traffic: the TaskRouter "
                "event types are not subscribed on the sink (docs/taskrouter.md).",
                [query(f"sum by (kind) (rate({JOIN_TOTAL}_total{hits}[{RATE}])) / sum by (kind) (rate({JOIN_TOTAL}_total{joins}[{RATE}]))")],
                "percentunit",
                maximum=1,
            )
        )
    )
    return Section("Queues and teams (Flex)", cells)


def joins_matchers() -> tuple[str, ...]:
    return ('job=~"$job"', 'instance=~"$instance"')


def slice_shares(threshold: QualityThreshold, dimension: str) -> str:
    """Each value of ``dimension``'s share past the threshold, for slices with at least the alerts'
    volume guard of streams, labelled for one ranking (``slice``, ``dimension``)."""
    guarded = (
        f"({threshold.share(RANGE, FILTERS, (dimension,))})"
        f" and on ({dimension}) ({threshold.count(RANGE, FILTERS, (dimension,))}) >= {settings.QUALITY_MIN_STREAMS}"
    )
    labelled = f'label_replace({guarded}, "slice", "$1", "{dimension}", "(.*)")'
    return f'label_replace({labelled}, "dimension", "{dimension}", "", "")'


def slice_excess(threshold: QualityThreshold, dimensions: list[str]) -> str:
    """How far each slice of ``dimensions`` sits above the whole selection's share past the threshold.
    The whole selection's share is subtracted once from the union of the slices, not once per
    dimension: the same result in a shorter query (the dashboard's ConfigMap has a size limit)."""
    union = " or ".join(f"({slice_shares(threshold, dimension)})" for dimension in dimensions)
    excess = f"({union}) - on () group_left () ({threshold.share(RANGE, FILTERS)})"
    return f'label_replace({excess}, "signal", "{threshold.tag}", "", "")'


def where_is_it_worse() -> Section:
    # The TaskRouter join's task_queue has its own row (queues_and_teams): ranked here too, it made the
    # dashboard's ConfigMap 204 KB, past 75 % of the 256 KiB last-applied annotation.
    dimensions = [dimension for dimension in settings.SLICE_DIMENSIONS if dimension not in JOIN_LABELS]
    ranking = " or ".join(f"({slice_excess(threshold, dimensions)})" for threshold in QUALITY_THRESHOLDS)
    return Section(
        "Where is it worse",
        [
            Cell(
                table(
                    "Slices furthest above the account",
                    "Every value of each slice dimension of the alerts "
                    f"({', '.join(dimensions)}; queues in their own row), ranked by how far its share of streams past one of Twilio's "
                    "thresholds sits above the share of the whole selection, over the selected time range (in points: "
                    f"0.2 = 20 points above). Slices with fewer than {settings.QUALITY_MIN_STREAMS} streams (the alerts' volume guard) "
                    "are left out. Filter to the top slice and switch the breakdown to find what it has in common.",
                    query(f"topk(15, sum by (signal, dimension, slice) ({ranking}))", instant=True),
                    "percentunit",
                    thresholds((None, "green"), (0, "orange"), (settings.QUALITY_ALERT_SHARE, "red")),
                    sort_by="above the account",
                ),
                24,
                9,
            )
        ],
    )


def objective(threshold: QualityThreshold) -> str:
    """The signal's objective as the rules record it (so an objective set in the Helm chart's values
    shows here too), or the generated default where the rules are not loaded."""
    return f'scalar(max({OBJECTIVE}{{signal="{threshold.tag}"}}) or vector({settings.SLO_OBJECTIVES[threshold.tag]:g}))'


def error_budget() -> Section:
    period = settings.SLO_PERIOD
    cells = [
        Cell(
            stat(
                f"{threshold.title}: budget left",
                f"Share of the error budget left over the last {period}, for the selection: the objective is that "
                f"{settings.SLO_OBJECTIVES[threshold.tag]:.0%} (default; the rules' {OBJECTIVE} when loaded) of streams are not "
                f"past {threshold.title}. Below 0 the objective is missed.",
                query(f"1 - ({threshold.share(period, FILTERS)}) / (1 - {objective(threshold)})", instant=True),
                "percentunit",
                thresholds((None, "red"), (0, "orange"), (0.25, "green")),
            ),
            6,
            4,
        )
        for threshold in QUALITY_THRESHOLDS
    ]
    cells += [
        Cell(
            timeseries(
                f"{threshold.title}: burn rate by $breakdown",
                f"How fast each slice spends its error budget, over 1 h: at 1 (dashed) it ends the {period} at its objective. "
                "The fast-burn alert pages above "
                + " or ".join(f"{burn_factor(w):g} ({w.long} and {w.short})" for w in settings.FAST_BURN)
                + "; the slow burn opens a ticket above "
                + " or ".join(f"{burn_factor(w):g} ({w.long} and {w.short})" for w in settings.SLOW_BURN)
                + ".",
                [query(f"({threshold.share('1h', FILTERS, BREAKDOWN)}) / (1 - {objective(threshold)})")],
                "none",
                threshold=1,
            ),
            6,
        )
        for threshold in QUALITY_THRESHOLDS
    ]
    return Section(f"Error budget ({period} objectives)", cells)


def volume_and_regions() -> Section:
    return Section(
        "Volume and regions",
        [
            Cell(
                timeseries(
                    "Summaries per minute by state and call status",
                    "`timeout` means Twilio gave up processing after 24 h and the metrics may be missing.",
                    [query(per_minute(participant_subject.SUMMARIES, ("processing_state", "call_status")), "{{processing_state}} / {{call_status}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Summaries per minute by call type and direction",
                    "Volume trend by call type (carrier, client, sip) and direction.",
                    [query(per_minute(participant_subject.SUMMARIES, ("call_type", "call_direction")), "{{call_type}} {{call_direction}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Region mismatches per minute",
                    "Participants whose media region differs from the conference's mixer region, by the pair of regions.",
                    [
                        query(
                            per_minute(participant_subject.REGION_MISMATCH, ("participant_region", "conference_region")),
                            "{{participant_region}} → {{conference_region}}",
                        )
                    ],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Region mismatch share by conference region",
                    "Share of a mixer region's participants whose media region differs from it.",
                    [query(per_summary(f"{participant_subject.REGION_MISMATCH}_total{sel()}", ("conference_region",)), "{{conference_region}}")],
                    "percentunit",
                    maximum=1,
                )
            ),
        ],
    )


def tags() -> Section:
    return Section(
        "Tags, severity and silent participants",
        [
            Cell(
                timeseries(
                    "Quality tags per minute",
                    "Voice Insights tags applied to streams (silent, high_jitter, high_latency, high_packet_loss, low_mos, ...).",
                    [query(per_minute(participant_subject.TAGS, ("tag", "stream")), "{{tag}} {{stream}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Detected issues per minute by severity",
                    "Severity Voice Insights gave each detected issue (tags_info).",
                    [query(per_minute(participant_subject.TAG_SEVERITY, ("issue", "severity")), "{{issue}} {{severity}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Silent streams per participant",
                    "Streams tagged `silent` per participant: one-way audio, a muted device or a broken media path.",
                    [query(per_summary(f"{participant_subject.TAGS}_total{sel(SILENT)}", ("stream",)), "{{stream}}")],
                    "percentunit",
                )
            ),
            Cell(
                timeseries(
                    "Degradations per minute",
                    "Degradation occurrences Voice Insights reported within streams, by metric.",
                    [query(per_minute(participant_subject.DEGRADATIONS, ("metric", "stream")), "{{metric}} {{stream}}")],
                    "cpm",
                    stack=True,
                )
            ),
        ],
    )


def durations() -> Section:
    cells = []
    for metric, name in ((participant_subject.DURATION, "Time in conference"), (participant_subject.QUEUE_TIME, "Queue time")):
        cells += [
            Cell(
                heatmap(
                    name,
                    f"Distribution of {name.lower()} per participant.",
                    query(f"sum by (le) (rate({metric}_bucket{sel()}[{RATE}]))", "{{le}}", heatmap=True),
                    "s",
                ),
                8,
            ),
            Cell(
                timeseries(
                    f"{name} percentiles",
                    f"Percentiles of {name.lower()}, interpolated within the buckets.",
                    [
                        query(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{sel()}[{RATE}])))", f"p{q * 100:g}")
                        for q in (0.5, 0.9, 0.99)
                    ],
                    "s",
                ),
                8,
            ),
            Cell(
                timeseries(
                    f"{name}, average",
                    f"Average {name.lower()} per participant.",
                    [query(f"sum(rate({metric}_sum{sel()}[{RATE}])) / sum(rate({metric}_count{sel()}[{RATE}]))", "average")],
                    "s",
                ),
                8,
            ),
        ]
    return Section("Duration and queue time", cells)


def activity() -> Section:
    return Section(
        "Hold, mute and coaching",
        [
            Cell(
                timeseries(
                    "Participant actions per minute",
                    "Hold, mute, coaching and modify events recorded in summaries.",
                    [query(per_minute(participant_subject.ACTIONS, ("action",)), "{{action}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Participant actions per participant",
                    "How often, on average, a participant is put on hold, muted or coached.",
                    [
                        query(
                            f"sum by (action) (rate({participant_subject.ACTIONS}_total{sel()}[{RATE}])) / on () group_left () sum(rate({participant_subject.SUMMARIES}_total{sel()}[{RATE}]))",
                            "{{action}}",
                        )
                    ],
                    "short",
                )
            ),
        ],
    )


def variables() -> list[dict[str, Any]]:
    found_in = f"{participant_subject.SUMMARIES}_total"
    result = [
        datasource_variable(),
        query_variable("job", f"label_values({found_in}, job)"),
        query_variable("instance", f'label_values({found_in}{{job=~"$job"}}, instance)'),
    ]
    result += [
        query_variable(name, f'label_values({found_in}{{job=~"$job", instance=~"$instance"}}, {name})', label=name.replace("_", " "))
        for name in LABEL_VARIABLES
    ]
    result += [
        custom_variable(
            "stat",
            participant_subject.STATS,
            label="jitter/latency stat",
            description="Which jitter and latency the distribution panels show: each stream's average or its maximum.",
        ),
        custom_variable("breakdown", BREAKDOWN_LABELS, label="breakdown", description="The label the breakdown row splits by."),
    ]
    return result


def build(generated: str) -> dict[str, Any]:
    """The whole dashboard as a JSON-ready dict."""
    return dashboard(
        uid=UID,
        title="Twilio conference quality",
        description=f"Twilio Voice Insights conference participant summaries. Twilio's thresholds: MOS <= {twilio_thresholds.MOS_THRESHOLD:g}, "
        f"average jitter >= {twilio_thresholds.JITTER_AVG_THRESHOLD_SECONDS * 1000:g} ms, average latency >= {twilio_thresholds.LATENCY_AVG_THRESHOLD_SECONDS * 1000:g} ms, "
        f"packet loss >= {twilio_thresholds.PACKET_LOSS_THRESHOLD_RATIO * 100:g} %.",
        generated=generated,
        variables=variables(),
        sections=noted(
            [
                overview(),
                where_is_it_worse(),
                thresholds_over_time(),
                error_budget(),
                distributions(),
                breakdown(),
                queues_and_teams(),
                volume_and_regions(),
                tags(),
                durations(),
                activity(),
            ],
            PANEL_DATA_AGE,
        ),
        tags=["twilio-insights", "twilio", "voice"],
    )
