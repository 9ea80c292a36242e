"""Inventory-vs-fill curves of a simulation, one line per policy (matplotlib, loaded lazily):
from a run in memory (`shelfcast simulate --plot`) or from its JSON afterwards
(`python -m shelfcast.simulation_plot RUN.json OUT.png`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

__all__ = ["Curve", "curves_from_json", "plot_curves"]

Curve = tuple[Sequence[float], Sequence[float], float | None]
"""(average inventory per swept target, fill rate per swept target, inventory at 95% fill)."""


def plot_curves(curves: Mapping[str, Curve], path: Path, *, title: str) -> None:
    """One line per policy, the 95% fill line and each policy's interpolated point."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, (xs, ys, at95) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
        if at95 is not None:
            ax.plot([at95], [0.95], marker="x", color="black")
    ax.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("average inventory on hand (units, all SKUs)")
    ax.set_ylabel("fill rate (units served / demanded)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_from_json(doc: Mapping[str, Any]) -> dict[str, Curve]:
    """The curves of a `shelfcast simulate --json` document."""
    try:
        return {name: ([p["avg_inventory"] for p in res["curve"]],
                       [p["fill_rate"] for p in res["curve"]], res.get("inventory_at_95_fill"))
                for name, res in doc["policies"].items()}
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"not a simulation JSON (missing {exc})") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m shelfcast.simulation_plot RUN.json OUT.png", file=sys.stderr)
        return 2
    src, out = Path(args[0]), Path(args[1])
    try:
        doc = json.loads(src.read_text())
        plot_curves(curves_from_json(doc), out,
                    title=f"{Path(str(doc.get('dataset', src.stem))).name}: "
                          f"{doc.get('scored_days', '?')} scored days")
    except (OSError, ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
