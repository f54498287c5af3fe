"""The tunables of the dashboards and alerts, each written once.

Twilio's quality thresholds (MOS <= 3.5, jitter >= 5 ms, ...) are not here: they belong to the
exporter's metrics contract (:mod:`exporter.metrics`) because they are also bucket edges. What is
here decides *when to wake someone up*, and is read by both the alert rules and the dashboards
(the red line on a "share past threshold" panel is the share at which the alert fires).
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.config import PullSettings

# Where each alert's runbook is served; an alert's runbook_url is RUNBOOK_BASE_URL/<AlertName>.md.
# Empty by default, and then the alerts carry no runbook_url: the project serves its runbooks
# (docs/runbooks/<AlertName>.md) nowhere, and a link to an address that does not exist is worse
# than none at 3 a.m. Set it to where you serve docs/runbooks/ (your fork, a wiki mirror) and
# regenerate; the Helm chart sets it from prometheusRule.runbookBaseUrl.
RUNBOOK_BASE_URL = ""

# Twilio sends a summary up to about 30 minutes after its call or conference ended: every quality
# panel and alert reads data at least that old, and says so (the "Data age" of each description).
SUMMARY_DELAY = "30m"

# `up` is the one series that exists when the exporter is down, and it carries only target labels,
# so the "exporter down" alert needs to know the scrape job. The Helm chart's ServiceMonitor names
# the job after the Service (<release>-twilio-insights-exporter); a static config should use a
# job name containing "twilio-insights-exporter".
EXPORTER_JOB_REGEX = ".*twilio-insights-exporter.*"
EXPORTER_DOWN_FOR = "5m"

# Twilio sends a summary up to ~30 minutes after a conference ends, and a contact centre can be
# quiet at night: two hours without a single summary while the exporter is up means the sink,
# the subscription or the public URL broke, not that nobody called.
NO_SUMMARIES_FOR_SECONDS = 2 * 60 * 60
# ...and a contact centre that works business hours is quiet every night and weekend, so the alert
# compares with the same time a week earlier: it stays quiet while the job recorded fewer than
# NO_SUMMARIES_WEEK_AGO_MIN summaries over the NO_SUMMARIES_WEEK_AGO_WINDOW before this moment a
# week ago (a night, a Sunday). Not a single one: a day that starts twenty minutes later than the
# week before is not an outage, so the week-ago hour must have been busy, not just begun. Set it to
# about a quarter of an ordinary hour's summaries; 0 turns the comparison off. Without a week of
# history (a new install, a short retention) the silence alone decides, as it should.
NO_SUMMARIES_WEEK_AGO_WINDOW = "1h"
NO_SUMMARIES_WEEK_AGO_MIN = 10
# The alert watches a subject (participant, call, conference) only if the job recorded one of its
# summaries within this window: a subject the user never receives never fires.
NO_SUMMARIES_SEEN_WINDOW = "1w"

# Quality alerts: the share of media streams past Twilio's threshold over QUALITY_WINDOW, for
# streams aggregated per scrape job and stream direction. QUALITY_MIN_STREAMS keeps one bad call
# (two streams) on a quiet evening from paging anyone; QUALITY_ALERT_SHARE is several times the
# share a healthy contact centre sees (a few percent), so it means "something systematic".
QUALITY_WINDOW = "30m"
QUALITY_MIN_STREAMS = 20
QUALITY_ALERT_SHARE = 0.10
QUALITY_ALERT_FOR = "10m"

# Webhook health: a signature failure answers 403, and Twilio discards a 4xx delivery without
# retrying, so a broken token or public URL loses data. A few stray unsigned requests (scanners on
# a public URL) must not page, hence both a minimum count and a share of all requests.
WEBHOOK_WINDOW = "15m"
SIGNATURE_FAILURE_MIN = 5
SIGNATURE_FAILURE_SHARE = 0.10
INVALID_EVENT_MIN = 5
INVALID_EVENT_SHARE = 0.05
WEBHOOK_ALERT_FOR = "5m"

# A label that keeps overflowing folds new values into "other": dashboards lose detail, nothing
# is lost in totals. Worth a ticket, not a page.
LABEL_OVERFLOW_WINDOW = "1h"

# Pull mode. The exporter does not expose its --pull.interval, so the "pull failing" alert assumes
# the exporter's default interval (read from its settings, not written again here): set
# PULL_INTERVAL_SECONDS to yours if you changed it. Three missed intervals mean polling is broken,
# not one poll delayed by a 429; the 10-minute floor keeps a short interval from paging while a
# poll is still retrying a brief API outage (it backs off for minutes before giving up).
PULL_INTERVAL_SECONDS = int(PullSettings.model_fields["interval"].get_default().total_seconds())
PULL_FAILING_FOR_SECONDS = max(3 * PULL_INTERVAL_SECONDS, 10 * 60)

# A summary still in_progress after --pull.pending-max-age is given up and never recorded: each is
# a participant missing from the quality dashboards. Rare and worth a look, not a page.
PULL_EXPIRED_WINDOW = "1h"
PULL_EXPIRED_MIN = 1

# ---------------------------------------------------------------------------------------------
# Alerts per slice and SLO burn-rate alerts (docs/alerts.md). A degradation confined to one
# region, carrier path, country or participant role hides in the account-wide share, so each
# quality signal is also evaluated per value of each of these dimensions (any subset of the
# common labels; each one costs series, see docs/alerts.md). The share and the volume guard
# above (QUALITY_ALERT_SHARE, QUALITY_MIN_STREAMS over QUALITY_WINDOW) apply to every slice too.
# ---------------------------------------------------------------------------------------------
# task_queue: the TaskRouter join's queue (exporter/join.py), so one Flex queue's degradation
# fires with its queue; its cost is the queue cap's (docs/alerts.md).
SLICE_DIMENSIONS = ("participant_region", "conference_region", "call_type", "country_code", "participant_label", "task_queue")
# The slice groups are evaluated at this fixed interval (whatever Prometheus' global one): a
# slice's stream count over a window is the integral of its recorded rate, sum_over_time(rate) x
# this interval, which stays exact for a slice younger than the window (a new country's first
# burst of calls), where avg_over_time(rate) x window would inflate it past the volume guard.
SLICE_EVALUATION_INTERVAL = "1m"

# SLO mode: the share of media streams *not* past Twilio's threshold that each signal should keep,
# per slice, over SLO_PERIOD (keyed by Voice Insights' tag of the signal). A healthy contact
# centre sees a few percent of streams past each threshold, so these leave a budget of 3-5 %;
# state your own. The burn-rate alerts are the multiwindow, multi-burn-rate alerts of Google's
# SRE workbook (chapter "Alerting on SLOs"): each fires when both windows burn the budget faster
# than the factor that spends BUDGET_SPENT of it within the long window.
SLO_OBJECTIVES = {"low_mos": 0.97, "high_jitter": 0.95, "high_latency": 0.95, "high_packet_loss": 0.97}
SLO_PERIOD = "30d"


@dataclass(frozen=True, slots=True)
class BurnWindows:
    """One row of the SRE workbook's table: a long and a short window, and the share of the
    period's budget that burning at the alert's rate spends within the long window."""

    long: str
    short: str
    budget_spent: float


# Fast burn pages (2 % of a 30-day budget in 1 h, or 5 % in 6 h: burn rates 14.4 and 6); slow
# burn opens a ticket (10 % in 1 day or in 3 days: burn rates 3 and 1).
FAST_BURN = (BurnWindows("1h", "5m", 0.02), BurnWindows("6h", "30m", 0.05))
SLOW_BURN = (BurnWindows("1d", "2h", 0.10), BurnWindows("3d", "6h", 0.10))
FAST_BURN_FOR = "2m"
SLOW_BURN_FOR = "15m"

# Grafana's base URL, where an alert's dashboard_url points: the quality dashboard of its kind,
# filtered to the alert's job and slice (dashboards/alert-links.yml lists each alert's view).
# Empty by default, and then the alerts carry no dashboard_url, for the reason RUNBOOK_BASE_URL
# gives; the Helm chart sets it from prometheusRule.grafanaUrl.
GRAFANA_URL = ""

# Kinesis consumer mode. A stream keeps records 24 hours by default (up to a year): a consumer
# behind by more than KINESIS_LAG_SECONDS for KINESIS_LAGGING_FOR is not keeping up and will lose
# records once the lag reaches the stream's retention. Ten minutes leaves hours to act on the
# default retention while ignoring the catch-up after a restart or a resharding.
KINESIS_LAG_SECONDS = 10 * 60
KINESIS_LAGGING_FOR = "15m"
# The consumer reads every shard at least once per --kinesis.poll-interval (1 s) even when idle,
# backing off up to --kinesis.max-backoff (30 s) on failures: ten minutes without one successful
# read means it is failing for good (credentials, permissions, network, a deleted stream).
KINESIS_FAILING_FOR_SECONDS = 10 * 60

# ---------------------------------------------------------------------------------------------
# Call Summaries (dashboards/call_rules.py). A call's quality is measured per edge (carrier, SIP,
# Voice SDK, client), so its signals are evaluated per edge and per value of each of these
# dimensions of the call families: the far end's carrier and country, and the Twilio edge the
# call's media used. The share and the volume guard of the participant alerts
# (QUALITY_ALERT_SHARE, QUALITY_MIN_STREAMS over QUALITY_WINDOW) apply, counted in calls' edge
# streams.
# ---------------------------------------------------------------------------------------------
CALL_SLICE_DIMENSIONS = ("carrier", "edge_location", "country_code")
# Objectives per call signal (Voice Insights' tag of the signal), as SLO_OBJECTIVES for participants.
CALL_SLO_OBJECTIVES = {"low_mos": 0.97, "high_jitter": 0.95, "high_packet_loss": 0.97, "high_rtt": 0.97}
