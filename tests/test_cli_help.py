"""Issue 20 #7: usage errors exit 2, the help is current and plain, defaults are shown,
``--version`` exists, and ``outbox stats`` is a deprecated alias of ``outbox status``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import hexa_event as he
from hexa_event.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(p): p for p in action.choices.values()}.values():
                found += _parsers(sub)
    return found


def test_missing_to_is_bad_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HEXA_EVENT_TO", raising=False)
    db = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["outbox", "relay", "--db", db]) == 2
    assert "--to" in capsys.readouterr().err


def test_help_has_no_raw_markup_anywhere() -> None:
    for parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "``" not in text, parser.prog
        assert ":meth:" not in text, parser.prog
        assert ":func:" not in text, parser.prog


def test_top_level_description_names_every_command() -> None:
    text = build_parser().format_help()
    for command in ("tail", "publish", "dlq", "doctor", "outbox", "inbox"):
        assert f"({command})" in text
    assert "4 not found" in text


def test_defaults_are_shown() -> None:
    texts = {p.prog: p.format_help() for p in _parsers(build_parser())}
    relay = " ".join(texts["hexa-event outbox relay"].split())
    assert "--lease LEASE (default: 30s)" in relay
    assert "--batch-size BATCH_SIZE (default: 1000)" in relay
    clean = " ".join(texts["hexa-event outbox clean"].split())
    assert "(default: 7d)" in clean


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"hexa-event {he.__version__}"


def test_outbox_stats_is_a_deprecated_alias_of_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["outbox", "migrate", "--db", db]) == 0
    capsys.readouterr()
    assert main(["outbox", "stats", "--db", db, "--json"]) == 0
    stats = capsys.readouterr()
    assert "deprecated" in stats.err
    assert "outbox status" in stats.err
    assert main(["outbox", "status", "--db", db, "--json"]) == 0
    status = capsys.readouterr()
    assert status.err == ""
    assert json.loads(stats.out) == json.loads(status.out)
