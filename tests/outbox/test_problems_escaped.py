"""The one-line summaries of database errors (``_sql.problems.brief``) and the failure
streaks of the relay and the cleaners (``_sql.health.Progress``) escape a NUL and lone
surrogates, as the outbox's ``last_error`` does: an error's text is the driver's or the
database's, which may echo anything (a key, a header, a table name). Given as they came,
a NUL cut C-string log pipelines short and a lone surrogate made a UTF-8 log handler, or a
health endpoint encoding its JSON, fail."""

from __future__ import annotations

import logging

import pytest

from hexa_event._sql.health import Progress
from hexa_event._sql.problems import brief, driver_error

HOSTILE = "key k\x00x at \udcff\ud800 and é"


def readable(text: str) -> None:
    assert "\x00" not in text
    text.encode("utf-8")  # no lone surrogate: raises UnicodeEncodeError otherwise
    for escape in ("\\x00", "\\udcff", "\\ud800"):
        assert escape in text
    assert "é" in text  # what UTF-8 holds stays as it is


def test_brief_escapes_a_nul_and_lone_surrogates() -> None:
    readable(brief(ValueError(HOSTILE)))
    assert brief(ValueError("plain\nSQL: SELECT 1")) == "plain"


def test_a_driver_error_escapes_them_too() -> None:
    readable(str(driver_error("sqlite:///x.db", "claiming", ValueError(HOSTILE))))


@pytest.mark.parametrize("given", [HOSTILE, ValueError(HOSTILE)], ids=["text", "exception"])
def test_progress_logs_and_reports_escaped_error_text(
    caplog: pytest.LogCaptureFixture, given: BaseException | str
) -> None:
    logger = logging.getLogger("test.progress.escaped")
    progress = Progress("outbox relay", 0.0, logger)
    with caplog.at_level(logging.ERROR, logger=logger.name):
        progress.failed("publishing", given)
        progress.failed("publishing", given)
    readable(progress.error("publishing"))
    [problem] = progress.problems(float("inf"))
    readable(problem)
    [record] = [r for r in caplog.records if r.name == logger.name]
    readable(record.getMessage())
