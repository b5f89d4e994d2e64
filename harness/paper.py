"""The paper's reported numbers (``harness/paper_values.yaml``), one place for every table to read."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")


@lru_cache(maxsize=1)
def paper_values() -> dict[str, Any]:
    return yaml.safe_load(PAPER_VALUES.read_text())


def paper_value(table: str, benchmark: str, row: str | int, metric: str) -> float | None:
    """The paper's number for one cell, or None where the paper has none (or it is not entered)."""
    value = (((paper_values().get(table) or {}).get(benchmark) or {}).get(row) or {}).get(metric)
    return None if value is None else float(value)


def paper_time_cost(system: str) -> float | None:
    """Table 1's time cost of a system (seconds per batch of 4 on one A100), by config/paper.yaml's names."""
    value = (paper_values().get("time_cost_s") or {}).get(system)
    return None if value is None else float(value)


def paper_metrics(table: str) -> list[str]:
    """The metrics the paper prints in ``table`` ("table1", "table2", "table3"), in its column order (the order of
    the entered rows' keys); a table shows these first, then any other configured metric."""
    seen: dict[str, None] = {}
    for rows in (paper_values().get(table) or {}).values():
        for row in rows.values():
            seen.update(dict.fromkeys(row))
    return list(seen)
