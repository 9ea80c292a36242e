"""Optimizer: inventory policy math, the periodic review, service levels, pack allocation and
consolidation into purchase plans — pure names only.

The Kafka/Postgres edges are imported from their own modules (`optimizer.service`,
`optimizer.store`), so importing the math needs no client library. The service-level and
allocation names (scipy.stats) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from optimizer.consolidate import consolidate, plan_from_lines, plan_id_for
from optimizer.errors import (
    MigrationError,
    OptimizerError,
    PolicyInputError,
    StoreError,
    StoreUnavailable,
)
from optimizer.policy import (
    RestockDecision,
    decide_restock,
    inventory_position,
    order_quantity,
    restock_reason,
)
from optimizer.review import PolicyTerms, Review, review

if TYPE_CHECKING:
    from optimizer.allocation import Allocation, AllocationProblem, allocate, pack_gains
    from optimizer.service_level import DemandDistribution, ServiceTarget, restock_levels

__all__ = [
    "Allocation",
    "AllocationProblem",
    "DemandDistribution",
    "MigrationError",
    "OptimizerError",
    "PolicyInputError",
    "PolicyTerms",
    "RestockDecision",
    "Review",
    "ServiceTarget",
    "StoreError",
    "StoreUnavailable",
    "allocate",
    "consolidate",
    "decide_restock",
    "inventory_position",
    "order_quantity",
    "pack_gains",
    "plan_from_lines",
    "plan_id_for",
    "restock_levels",
    "restock_reason",
    "review",
]

# the names whose modules load scipy.stats, imported on first use (PEP 562): the stream
# worker imports optimizer.review, and scipy.stats cost ~0.9 s of its start
_WHERE: dict[str, str] = {
    "Allocation": "optimizer.allocation",
    "AllocationProblem": "optimizer.allocation",
    "DemandDistribution": "optimizer.service_level",
    "ServiceTarget": "optimizer.service_level",
    "allocate": "optimizer.allocation",
    "pack_gains": "optimizer.allocation",
    "restock_levels": "optimizer.service_level",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'optimizer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
