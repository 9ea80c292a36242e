"""Optimizer: inventory policy math, the periodic review, service levels, pack allocation and
consolidation into purchase plans — pure names only.

The Kafka/Postgres edges are imported from their own modules (`optimizer.service`,
`optimizer.store`), so importing the math needs no client library.
"""

from optimizer.allocation import Allocation, AllocationProblem, allocate, pack_gains
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
