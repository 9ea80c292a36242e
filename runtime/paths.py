"""How a file path is written into results and artifacts: relative to the working directory,
so a committed JSON names `../shared/data/x.csv.gz`, never the machine it ran on."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["recorded_args", "recorded_path"]


def recorded_path(path: str | os.PathLike[str]) -> str:
    """`path` relative to the current directory (as given when that fails: another drive)."""
    try:
        return os.path.relpath(Path(path))
    except ValueError:
        return str(path)


def recorded_args(argv: list[str]) -> list[str]:
    """A command line as results record it: absolute paths (also in `--opt=PATH`) made
    relative by `recorded_path`."""

    def one(arg: str) -> str:
        name, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        return name + eq + (recorded_path(value) if os.path.isabs(value) else value)

    return [one(a) for a in argv]
