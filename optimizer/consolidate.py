"""Consolidation: restock decisions grouped into one purchase plan per (supplier, location)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from schemas.events import PlanEvent, PlanLine, RestockEvent
from schemas.ids import deterministic_id

__all__ = ["consolidate", "plan_from_lines", "plan_id_for"]

# Totals are money; four decimals keep sub-cent unit costs exact enough and equal the DB's numeric.
COST_DECIMALS = 4


def plan_id_for(supplier: str, location: str, restock_ids: Iterable[str]) -> str:
    """Deterministic plan id: the same supplier, location and set of restocks give the same id."""
    return deterministic_id("plan", supplier, location, *sorted(set(restock_ids)))


def plan_from_lines(
    *, plan_id: str, supplier: str, location: str, lines: Sequence[PlanLine], decided_at: datetime
) -> PlanEvent:
    """A PlanEvent whose totals are computed from exactly `lines`."""
    return PlanEvent(
        plan_id=plan_id,
        supplier=supplier,
        location=location,
        lines=list(lines),
        total_units=sum(line.quantity for line in lines),
        total_cost=round(sum(line.quantity * line.unit_cost for line in lines), COST_DECIMALS),
        decided_at=decided_at,
    )


def consolidate(restocks: Sequence[RestockEvent], decided_at: datetime) -> list[PlanEvent]:
    """One plan per (supplier, location) over `restocks`, one line per distinct restock_id.

    A restock id seen twice in the batch (a redelivery) keeps its first occurrence. Plans come
    out sorted by (supplier, location) and lines by (sku, restock_id), so the output is
    deterministic in the input set.
    """
    groups: dict[tuple[str, str], dict[str, PlanLine]] = {}
    seen: set[str] = set()
    for restock in restocks:
        if restock.restock_id in seen:
            continue
        seen.add(restock.restock_id)
        groups.setdefault((restock.supplier, restock.location), {})[restock.restock_id] = PlanLine(
            restock_id=restock.restock_id,
            sku=restock.sku,
            quantity=restock.quantity,
            unit_cost=restock.unit_cost,
        )
    plans = []
    for (supplier, location), by_id in sorted(groups.items()):
        lines = sorted(by_id.values(), key=lambda line: (line.sku, line.restock_id))
        plans.append(
            plan_from_lines(
                plan_id=plan_id_for(supplier, location, by_id),
                supplier=supplier,
                location=location,
                lines=lines,
                decided_at=decided_at,
            )
        )
    return plans
