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

Each subject declares its own policy in its module (exporter/subjects/participant.py,
call.py, conference.py: its labels, caps, allowlists and budget of label sets); the join's labels,
first in every subject's, are in exporter/subjects/common.py. This module is the machinery only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from exporter.reader import clean_value

UNKNOWN = "unknown"
OTHER = "other"

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
        *,
        max_label_sets: int,
        defaults: Mapping[str, int],
        default_allowlists: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        # defaults: the labels of one subject and their caps (each subject's module declares its own).
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
