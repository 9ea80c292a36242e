"""The pure modules import without any Kafka or PostgreSQL client library installed.

A fresh interpreter whose import system refuses the client libraries imports each pure module
in turn, so a module that reaches for one (directly or through a package `__init__`) fails
here with the import chain that led to it."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKED = ("aiokafka", "faust", "mode", "asyncpg", "kafka")

PURE = (
    "schemas",
    "forecasting",
    "forecasting.promotion",
    "forecasting.retrain",
    "optimizer",
    "optimizer.policy",
    "optimizer.service_level",
    "optimizer.allocation",
    "optimizer.review",
    "streams.processor",
    "streams.state",
    "streams.codec",
    "runtime.settings",
)

# Imports `modules` with BLOCKED refused; prints {module: error} for those that failed.
_PROBE = textwrap.dedent("""
    import importlib, json, sys, traceback
    blocked, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ImportError(f"{name} is blocked: a pure module must not need it")
            return None

    sys.meta_path.insert(0, Refuse())
    failed = {}
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:
            failed[module] = traceback.format_exc()
    print(json.dumps(failed))
""")


def import_with_clients_blocked(modules: tuple[str, ...]) -> dict[str, str]:
    """{module: traceback} of the modules that failed to import in a clean interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(BLOCKED), json.dumps(modules)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_pure_modules_import_without_kafka_or_postgres_clients():
    failed = import_with_clients_blocked(PURE)
    assert failed == {}, "\n".join(f"{m}:\n{tb}" for m, tb in failed.items())


def test_the_client_edges_do_need_them():
    """The probe itself works: the modules at the Kafka and Postgres edges fail under it."""
    edges = ("optimizer.store", "optimizer.service", "streams.engine")
    failed = import_with_clients_blocked(edges)
    assert set(failed) == set(edges)
    assert "asyncpg is blocked" in failed["optimizer.store"]
    assert "aiokafka is blocked" in failed["streams.engine"]
