"""Optimizer: inventory policy math, consolidation into purchase plans, Postgres store, service."""

from optimizer.consolidate import consolidate, plan_from_lines, plan_id_for
from optimizer.errors import (
    MigrationError,
    OptimizerError,
    PolicyInputError,
    StoreError,
    StoreUnavailable,
)
from optimizer.policy import RestockDecision, decide_restock, inventory_position, order_quantity
from optimizer.service import OptimizerService, ServiceCounters, retry_transient
from optimizer.store import (
    TRANSIENT_DB_ERRORS,
    Migration,
    PlanStore,
    load_migrations,
    wait_for_server,
)

__all__ = [
    "TRANSIENT_DB_ERRORS",
    "Migration",
    "MigrationError",
    "OptimizerError",
    "OptimizerService",
    "PlanStore",
    "PolicyInputError",
    "RestockDecision",
    "ServiceCounters",
    "StoreError",
    "StoreUnavailable",
    "consolidate",
    "decide_restock",
    "inventory_position",
    "load_migrations",
    "order_quantity",
    "plan_from_lines",
    "plan_id_for",
    "retry_transient",
    "wait_for_server",
]
