"""A simulation's curves plotted from its JSON: the same curves `--plot` draws in memory,
one-line errors for a file that is not a simulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from shelfcast.simulation_plot import curves_from_json, main

DOC = {"dataset": "x/panel.csv.gz", "scored_days": 3, "policies": {
    "minmax": {"inventory_at_95_fill": 12.5,
               "curve": [{"avg_inventory": 10.0, "fill_rate": 0.9},
                         {"avg_inventory": 15.0, "fill_rate": 0.98}]},
    "forecast:lstm": {"inventory_at_95_fill": None,
                      "curve": [{"avg_inventory": 4.0, "fill_rate": 0.5}]}}}


def test_curves_come_from_each_policys_sweep() -> None:
    curves = curves_from_json(DOC)
    assert curves["minmax"] == ([10.0, 15.0], [0.9, 0.98], 12.5)
    assert curves["forecast:lstm"] == ([4.0], [0.5], None)
    with pytest.raises(ConfigError, match="not a simulation JSON"):
        curves_from_json({"models": {}})


def test_the_command_writes_a_png_or_says_why_not(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    src = tmp_path / "run.json"
    src.write_text(json.dumps(DOC))
    assert main([str(src), str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"
    src.write_text(json.dumps({"policies": {"a": {}}}))
    assert main([str(src), str(tmp_path / "bad.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: not a simulation JSON") and err.count("\n") == 1
    assert main([]) == 2
