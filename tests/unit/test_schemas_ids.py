"""`deterministic_id` is exactly the UUIDv5 of its name (what restock and alert ids keep)."""

import random
import uuid
from datetime import UTC, datetime

from schemas.ids import _NAMESPACE, deterministic_id


def test_ids_equal_uuid5_of_the_joined_parts():
    rng = random.Random(4)
    alphabet = "abcXYZ019@-_/ é漢\x1f"
    cases = [("restock", "SKU-1", "wh", 15_040), ("alert", "A", "L", "demand_anomaly",
             datetime(2011, 3, 7, tzinfo=UTC).isoformat()), ("plan", "acme", "wh", "r1", "r2"),
             ("x",), ("", "")]
    for _ in range(500):
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
                 for _ in range(rng.randint(0, 4))]
        cases.append((rng.choice(["restock", "alert"]), *parts, rng.randint(-5, 10**6)))
    for kind, *parts in cases:
        name = "\x1f".join([kind, *(str(p) for p in parts)])
        assert deterministic_id(kind, *parts) == str(uuid.uuid5(_NAMESPACE, name))
