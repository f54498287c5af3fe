"""What every subject's label policy shares: the TaskRouter join's labels, their caps and the label sets they add.

A leaf (it imports nothing of the exporter): the configuration, the subjects and the join read it.
"""

from __future__ import annotations

# The TaskRouter join's labels (exporter/join.py), first among every kind's common labels: a
# state file of schema 3 gains them as 'unknown' in front of each saved label set (state.py).
JOIN_LABELS = ("task_queue", "workflow", "team")
# A Workspace allows 5,000 queues and 1,000 workflows (taskrouter-join-facts.md §5.1): the caps
# are what a dashboard can still show, a centre of 50 queues and 20 teams with headroom.
JOIN_MAX_VALUES = {"task_queue": 100, "workflow": 20, "team": 50}
# A centre of 50 queues x 20 teams: the label sets the join labels may multiply each subject's by.
JOIN_LABEL_SETS = 50 * 20
