"""`shelfcast calendar publish`'s file: a CSV of holidays read into checked HolidayEvents,
ids stable across runs, a bad row named in one line and nothing published."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from shelfcast.cli import main
from streams.calendar_file import read_calendar_csv


def write(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
    return path


def test_rows_become_holidays_with_stable_ids(tmp_path: Path) -> None:
    text = ("location,start_day,end_day,name,version,cancelled\n"
            "*,2026-12-25,2026-12-26,Christmas,,\n"
            "store_17,2026-12-31,,inventory,3,false\n"
            "store_17,2026-05-01,,,2,true\n")
    events = read_calendar_csv(write(tmp_path / "cal.csv.gz", text))
    assert [(e.location, e.start_day, e.end_day, e.name, e.version, e.cancelled)
            for e in events] == [
        ("*", date(2026, 12, 25), date(2026, 12, 26), "Christmas", 1, False),
        ("store_17", date(2026, 12, 31), date(2026, 12, 31), "inventory", 3, False),
        ("store_17", date(2026, 5, 1), date(2026, 5, 1), None, 2, True)]
    again = read_calendar_csv(write(tmp_path / "again.csv", text))
    assert [e.event_id for e in again] == [e.event_id for e in events]  # republish: same ids
    assert len({e.event_id for e in events}) == 3
    one_day = read_calendar_csv(write(tmp_path / "day.csv", "day,location,event_id\n"
                                      "2026-01-01,L,new-year\n"))
    assert (one_day[0].event_id, one_day[0].start_day, one_day[0].end_day) == (
        "new-year", date(2026, 1, 1), date(2026, 1, 1))


@pytest.mark.parametrize(("text", "message"), [
    ("location,start_day\nL,2026-02-30\n", "cal.csv:2: start_day"),
    ("location,start_day,end_day\nL,2026-01-02,2026-01-01\n", "end_day is before start_day"),
    ("location,start_day,version\nL,2026-01-02,two\n", "cal.csv:2: version"),
    ("location,start_day,cancelled\nL,2026-01-02,maybe\n", "cancelled must be true or false"),
    ("location,start_day\n,2026-01-02\n", "cal.csv:2: location"),
    ("store,start_day\nL,2026-01-02\n", "needs `location` and `start_day`"),
])
def test_a_bad_file_is_one_line_naming_the_row(tmp_path: Path, text: str, message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "cal.csv", text)
    with pytest.raises(ConfigError, match=message.replace("`", ".")):
        read_calendar_csv(path)
    assert main(["calendar", "publish", str(path)]) == 1  # before anything is sent
    err = capsys.readouterr().err.strip()
    assert err.startswith("shelfcast: error:") and "\n" not in err


def test_dry_run_checks_and_sends_nothing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "cal.csv", "location,start_day\nL,2026-01-01\nM,2026-01-03\n")
    assert main(["calendar", "publish", str(path), "--dry-run"]) == 0
    assert "2 holiday(s) checked, 2 location(s), 2026-01-01 .. 2026-01-03" in (
        capsys.readouterr().out)
