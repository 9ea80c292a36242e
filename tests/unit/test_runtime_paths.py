"""Results record paths relative to the working directory, never the machine's absolute ones."""

import os

from runtime.paths import recorded_args, recorded_path


def test_absolute_paths_are_recorded_relative_to_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    data = tmp_path / "shared" / "data" / "x.csv.gz"
    assert recorded_path(data) == os.path.join("..", "shared", "data", "x.csv.gz")
    assert recorded_path("y.json") == "y.json"
    assert recorded_args(["simulate", "--data", str(data), f"--json={work / 'out.json'}",
                          "--days", "56"]) == [
        "simulate", "--data", os.path.join("..", "shared", "data", "x.csv.gz"),
        "--json=out.json", "--days", "56"]
