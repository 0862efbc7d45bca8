"""Numbers as a reader sees them: every value in the report goes through one of these, so a
missing or unscored value reads "unscored" or "n/a", never 0, NaN or "None"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

UNSCORED = "unscored"
NA = "n/a"


def _real(value: Any) -> float | None:
    """A finite number, or None for missing values, NaN and anything that is not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value: Any, spec: str, missing: str, scale: float = 1.0, suffix: str = "") -> str:
    x = _real(value)
    return missing if x is None else f"{x * scale:{spec}}{suffix}"


fmt_pct = partial(_fmt, spec=".1f", missing=UNSCORED, scale=100.0, suffix="%")
fmt_metric = partial(_fmt, spec=".3f", missing=UNSCORED)
fmt_seconds = partial(_fmt, spec=",.1f", missing=NA)
fmt_rate = partial(_fmt, spec=",.1f", missing=NA)
# Verifier latencies are often well under a second, where one decimal would read 0.0.
fmt_latency = partial(_fmt, spec=",.2f", missing=NA)
fmt_memory = partial(_fmt, spec=",.0f", missing=NA, suffix=" MB")
fmt_error = partial(_fmt, spec=".4f", missing=NA)


def fmt_ci(ci: Sequence[float | None] | None, missing: str = UNSCORED) -> str:
    bounds = [_real(b) for b in ci or []]
    low, high = bounds if len(bounds) == 2 else (None, None)
    if low is None or high is None:
        return missing
    return f"{100 * low:.1f}–{100 * high:.1f}%"


def fmt_number(value: Any, missing: str = NA) -> str:
    """Counts with thousands separators; other numbers with one decimal."""
    x = _real(value)
    if x is None:
        return missing
    return f"{int(x):,}" if x.is_integer() else f"{x:,.1f}"


def fmt_params(value: Any, missing: str = NA) -> str:
    x = _real(value)
    if x is None or x <= 0:
        return missing
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.0f}"


def fmt_bool(value: bool | None, missing: str = NA) -> str:
    return missing if value is None else ("yes" if value else "no")


def fmt_text(value: Any, missing: str = NA) -> str:
    return missing if value is None or value == "" else str(value)


def fmt_counts(counts: dict[str, Any] | None) -> str:
    if not counts:
        return ""
    return ", ".join(f"{name} {fmt_number(value)}" for name, value in counts.items())
