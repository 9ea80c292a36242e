"""Summarise a py-spy raw profile (collapsed stacks) of a worker by module.

Each sample is charged to the innermost frame that is project code (`streams/`,
`forecasting/`, `optimizer/`, `schemas/`, `runtime/`, `shelfcast/`), shown as its module and
function group, and separately to the package of the innermost frame of all (where the CPU
actually was: msgspec, orjson, numpy, aiokafka, asyncio, ...). Idle samples (the event loop
waiting in select/epoll; py-spy leaves them out unless run with --idle) are counted apart,
so shares are of busy samples; `--under` keeps the samples below one frame only (or below
any of several, `A|B`: the batch engine's partitions and inference run as tasks of their
own, beside its loop).

    python benchmarks/profile_summary.py PROFILE.txt [--top 25] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

PROJECT = ("streams", "forecasting", "optimizer", "schemas", "runtime", "shelfcast")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_IDLE = ("select (selectors.py", "poll (selectors.py", "_run_once (asyncio/base_events.py")


def _module(path: str) -> tuple[str | None, str]:
    """(project module or None, top-level package) of a frame's file (py-spy names files
    relative to their sys.path entry: `streams/engine.py`, `asyncio/events.py`)."""
    parts = path.replace("\\", "/").split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:] or parts
    for i, part in enumerate(parts):
        if part in PROJECT and i + 1 < len(parts):
            return "/".join(parts[i:]).removesuffix(".py").replace("/", "."), part
    return None, parts[0].removesuffix(".py") if len(parts) > 1 else parts[-1]


def summarise(path: Path, top: int, under: str | None = None) -> dict[str, object]:
    by_module: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    busy = idle = 0
    roots = under.split("|") if under else []
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if roots and not any(root in stack for root in roots):
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if frames and frames[-1].startswith(_IDLE):
            idle += count
            continue
        busy += count
        innermost_package = None
        charged = False
        for frame in reversed(frames):
            m = _FRAME.match(frame)
            if m is None:
                continue
            module, package = _module(m["file"])
            if innermost_package is None:
                innermost_package = package
            if module is not None and not charged:
                by_module[module] += count
                by_function[f"{module}.{m['func']}"] += count
                charged = True
        if not charged:
            by_module["(outside the project)"] += count
        by_package[innermost_package or "?"] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(busy, 1), 1)) for k, v in counter.most_common(top)]

    return {"profile": str(path), "under": under, "busy_samples": busy, "idle_samples": idle,
            "by_project_module": shares(by_module), "by_function": shares(by_function),
            "by_innermost_package": shares(by_package)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--under", help="only samples whose stack holds this frame text (or any "
                    "of several, 'A|B'), e.g. 'BatchEngine._loop' (the worker's steady "
                    "state, not its start-up)")
    args = ap.parse_args()
    result = summarise(args.profile, args.top, args.under)
    print(f"{args.profile}: {result['busy_samples']} busy samples, "
          f"{result['idle_samples']} idle")
    for title in ("by_project_module", "by_function", "by_innermost_package"):
        print(f"\n{title} (% of busy samples)")
        for name, share in result[title]:  # type: ignore[attr-defined]
            print(f"  {share:5.1f}  {name}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
