"""The docs say what the code does: the runbook lists exactly the dead-letter reasons the code
emits, the README topic table every required field of each contract."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def emitted_kinds() -> set[str]:
    """`kind=` of every InvalidEvent raised in the packages that dead-letter (and the two kinds
    `schemas.decode` picks between in one expression)."""
    kinds: set[str] = set()
    for package in ("schemas", "streams", "optimizer"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for line in text.splitlines():
                if "np." not in line:  # numpy's argsort(kind="stable") is no dead letter
                    kinds |= set(re.findall(r'\bkind="([a-z0-9_]+)"', line))
            for first, other in re.findall(
                    r'^\s*kind = "([a-z0-9_]+)" if .* else "([a-z0-9_]+)"$', text, re.M):
                kinds |= {first, other}
    return kinds


def test_the_runbook_lists_the_reasons_the_code_emits():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    section = runbook.split("## Dead-letter reasons", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M))
    kinds = emitted_kinds()
    assert {"validation", "not_utf8", "empty", "late", "key_mismatch"} <= kinds  # the scan works
    assert listed == kinds


def test_the_readme_topic_table_lists_every_required_field():
    from schemas.export import CONTRACT_MODELS

    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| `[^`]+`[^|]* \| [^|]+ \| `(\w+)`: (.*) \|$", readme, re.M)}
    for name, model in CONTRACT_MODELS.items():
        if name not in rows:
            continue
        required = {f for f, info in model.model_fields.items()
                    if info.is_required() and f != "schema_version"}
        missing = {f for f in required if f"`{f}`" not in rows[name]}
        assert not missing, f"{name} row lacks {sorted(missing)}"
