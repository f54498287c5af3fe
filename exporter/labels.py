"""Which labels exist and how each stays bounded.

Every label value that comes from a summary passes through a :class:`BoundedLabel`: a missing
value becomes ``unknown``; a value outside the allowlist, or past the label's cap of distinct
values, becomes ``other`` and is counted in ``twilio_insights_exporter_label_overflow_total``.
So a flood of distinct labels (free-text participant labels, a new country every call) can grow
the registry by at most the cap, never without bound. Call, conference and participant SIDs are
never labels: they are exemplars.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import DEFAULT_MAX_VALUES, LabelSettings

UNKNOWN = "unknown"
OTHER = "other"
# Twilio caps a participant label at 64 characters; nothing else we label by is longer.
MAX_VALUE_LENGTH = 64


class BoundedLabel:
    """The values one label may take: first come, first kept, up to a cap (or an allowlist)."""

    __slots__ = ("_kept", "_on_overflow", "allowlist", "max_values", "name")

    def __init__(self, name: str, max_values: int, allowlist: frozenset[str] | None, on_overflow: Callable[[str], None]) -> None:
        self.name = name
        self.max_values = max_values
        self.allowlist = allowlist
        self._kept: set[str] = set()
        self._on_overflow = on_overflow

    def __call__(self, value: str | None) -> str:
        """The label value to use for ``value``.

        >>> label = BoundedLabel("call_type", 1, None, lambda name: None)
        >>> label("sip"), label(None), label("carrier"), label("sip")
        ('sip', 'unknown', 'other', 'sip')
        """
        if value is None:
            return UNKNOWN
        value = value.strip()[:MAX_VALUE_LENGTH]
        if not value:
            return UNKNOWN
        if value in self._kept:
            return value
        if (self.allowlist is not None and value not in self.allowlist) or len(self._kept) >= self.max_values:
            self._on_overflow(self.name)
            return OTHER
        self._kept.add(value)
        return value


class LabelPolicy:
    """All bounded labels of the exporter, built from the ``labels`` settings."""

    def __init__(self, settings: LabelSettings, on_overflow: Callable[[str], None]) -> None:
        self.common_names = settings.common_labels()
        self._labels = {name: BoundedLabel(name, settings.max_values(name), settings.allowlist(name), on_overflow) for name in DEFAULT_MAX_VALUES}
        self._common = [self._labels[name] for name in self.common_names]

    def __getitem__(self, name: str) -> BoundedLabel:
        return self._labels[name]

    def common(self, values: dict[str, str | None]) -> tuple[str, ...]:
        """The common label values, in the order of :attr:`common_names`."""
        return tuple(label(values.get(label.name)) for label in self._common)
