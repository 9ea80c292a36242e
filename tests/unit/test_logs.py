"""Log lines: JSON objects when asked (for log shippers), text otherwise."""

import json
import logging

from runtime.logs import configure_logging
from runtime.settings import Settings


def test_json_log_lines_carry_level_logger_and_extra_fields(capsys):
    configure_logging(Settings(log_format="json"))
    logging.getLogger("shelfcast.test").info("batch done", extra={"events": 42})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["message"] == "batch done" and record["level"] == "INFO"
    assert record["logger"] == "shelfcast.test" and record["events"] == 42


def test_text_is_the_default(capsys):
    configure_logging(Settings())
    logging.getLogger("shelfcast.test").warning("plain")
    assert "[WARNING] shelfcast.test: plain" in capsys.readouterr().err
