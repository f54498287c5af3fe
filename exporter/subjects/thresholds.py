"""Twilio's quality thresholds and the bucket edges built on them, written once for every subject.

Each threshold is also a bucket edge, so "share past the threshold" is an exact bucket ratio; the
dashboards and alert rules read these (dashboards/).
"""

from __future__ import annotations

# Twilio's own detected-issue thresholds (twilio-facts.md). Each is also a bucket edge below, so
# "share of participants past the threshold" is an exact bucket ratio, not an interpolation.
# Prometheus buckets are "less than or equal", so the MOS share (<= 3.5) is exact; for jitter,
# latency and loss the bucket ratio gives "strictly above the edge", which differs from Twilio's
# ">=" only for a value exactly on the edge.
# ---------------------------------------------------------------------------------------------
MOS_THRESHOLD = 3.5
JITTER_AVG_THRESHOLD_SECONDS = 0.005
JITTER_MAX_THRESHOLD_SECONDS = 0.020
# One Twilio page names 30 ms for the max jitter threshold: both are edges.
JITTER_MAX_ALT_THRESHOLD_SECONDS = 0.030
LATENCY_AVG_THRESHOLD_SECONDS = 0.150
PACKET_LOSS_THRESHOLD_RATIO = 0.05

# ---------------------------------------------------------------------------------------------
# Default buckets. Each list is dense around the threshold where operators make decisions and
# sparse in the tails, so a histogram stays at about ten series per label set.
# ---------------------------------------------------------------------------------------------
# MOS (ITU-T G.107 E-model) runs from 1 to about 4.5 for narrowband audio: 4.0+ is "satisfied",
# 3.6-4.0 "some users dissatisfied", <= 3.5 Twilio's low-MOS tag, below 3.1 "many dissatisfied".
MOS_BUCKETS = (1.0, 2.0, 2.5, 3.0, 3.25, MOS_THRESHOLD, 3.75, 4.0, 4.2, 4.4, 4.5)
# Jitter: 5 ms average and 20/30 ms max are Twilio's edges; above 100 ms calls are unusable.
JITTER_BUCKETS = (
    0.001,
    0.0025,
    JITTER_AVG_THRESHOLD_SECONDS,
    0.010,
    JITTER_MAX_THRESHOLD_SECONDS,
    JITTER_MAX_ALT_THRESHOLD_SECONDS,
    0.050,
    0.100,
    0.250,
)
# Latency (edge to mixer): 150 ms is Twilio's edge and ITU-T G.114's one-way comfort limit.
LATENCY_BUCKETS = (0.010, 0.025, 0.050, 0.100, LATENCY_AVG_THRESHOLD_SECONDS, 0.200, 0.300, 0.500, 1.0)
# Packet loss ratio: an edge at exactly 0 separates clean calls; 1 % is audible with PLC, 5 % is
# Twilio's edge, above 20 % speech is unintelligible.
PACKET_LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, PACKET_LOSS_THRESHOLD_RATIO, 0.10, 0.20, 0.50, 1.0)
# Quality issues per participant: 0 (a clean call) must be its own bucket.
QUALITY_ISSUES_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0)
# Participant time in a conference: contact-centre calls cluster between 1 and 20 minutes.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
# Time in queue before joining (Add Participant API): service-level targets are usually 20-60 s.
QUEUE_TIME_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# The Voice SDK's own warning thresholds (twilio.js, "Voice SDK call quality warnings"): high-rtt
# past 400 ms, high-packet-loss past 1 %; each is a bucket edge so the share past it is exact.
RTT_THRESHOLD_SECONDS = 0.400
SDK_PACKET_LOSS_THRESHOLD_RATIO = 0.01
# Round-trip time from the caller's app to Twilio: a same-continent path is 20-100 ms.
RTT_BUCKETS = (0.025, 0.050, 0.100, 0.150, 0.200, 0.300, RTT_THRESHOLD_SECONDS, 0.600, 1.0)
# Post-dial delay (dial to ringback): PSTN calls see 1-4 s; past 10 s callers hang up.
POST_DIAL_DELAY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
# Connect duration of a call and length of a conference: 0 (never answered, never started) is its
# own bucket; contact-centre calls cluster between 1 and 20 minutes.
CALL_DURATION_BUCKETS = (0.0, *DURATION_BUCKETS)
# Participants at once: two is a call; Twilio caps a conference at 250.
CONCURRENT_PARTICIPANTS_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0)
