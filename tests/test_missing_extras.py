"""Importing a part of hexa-event without its extra says which extra to install (it raised
a bare ``ModuleNotFoundError`` for sqlalchemy or opentelemetry)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
sys.modules[{blocked!r}] = None  # as if not installed: importing it raises ModuleNotFoundError
try:
    import {part}
except ModuleNotFoundError as exc:
    from hexa_event.errors import HexaEventError
    print(type(exc).__name__, isinstance(exc, HexaEventError), exc.name)
    print(exc)
else:
    print("imported")
"""


@pytest.mark.parametrize(
    ("part", "blocked", "extra"),
    [
        ("hexa_event.outbox", "sqlalchemy", "sql"),
        ("hexa_event.inbox", "sqlalchemy", "sql"),
        ("hexa_event.telemetry", "opentelemetry", "otel"),
    ],
)
def test_a_part_imported_without_its_extra_names_the_extra(
    part: str, blocked: str, extra: str
) -> None:
    code = PROBE.format(part=part, blocked=blocked)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert out[0] == f"MissingExtraError True {blocked}", out
    assert f"{part} needs {blocked!r}" in out[1]
    assert f"pip install -e '.[{extra}]'" in out[1]


def test_a_module_no_extra_installs_is_raised_as_it_is() -> None:
    from hexa_event.errors import require_extra

    exc = ModuleNotFoundError("No module named 'billing_rules'", name="billing_rules")
    assert require_extra("hexa_event.outbox", exc) is exc
