"""Issue 20 #3: hexa-event is not on PyPI yet, so a missing extra's error says how to
install it from a clone or a git URL, not ``pip install 'hexa-event[x]'``."""

from __future__ import annotations

import importlib

import pytest

import hexa_event as he

connect_module = importlib.import_module("hexa_event.connect")


def test_a_missing_driver_dependency_says_how_to_install_from_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(connect_module._BUILTIN, "fake", "no_such_client_for_tests:Driver")
    monkeypatch.setitem(connect_module._EXTRA_FOR, "fake", "kafka")
    with pytest.raises(he.ConfigurationError) as caught:
        he.connect("fake://127.0.0.1:1")
    text = str(caught.value)
    assert "'no_such_client_for_tests'" in text
    assert "pip install -e '.[kafka]'" in text
    assert "pip install 'hexa-event[kafka] @ git+" in text
    assert "not on PyPI" in text


def test_an_unknown_scheme_names_the_same_install_forms() -> None:
    with pytest.raises(he.UnknownSchemeError) as caught:
        he.connect("kafkaa://127.0.0.1:9092")
    assert "pip install -e '.[kafka]'" in str(caught.value)
