"""How ``hexa-event --help`` reads: defaults shown, no reStructuredText markup.

:func:`tidy` walks a parser and its subcommands once they are built: every parser gets
:class:`HelpFormatter` (descriptions keep their line breaks), each option's help says its
default, and descriptions and help texts lose the docstrings' double backticks and roles.
"""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def plain(text: str) -> str:
    """``text`` with ``literal`` and :role:`target` markup reduced to the words."""
    return _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text).replace("``", "")


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written (the defaults are in the help texts, by :func:`tidy`)."""


def with_default(action: argparse.Action) -> str | None:
    """``action``'s help with ``(default: X)`` appended when the default is worth showing
    (not None/False/empty, and not already stated in the help)."""
    text = plain(action.help) if isinstance(action.help, str) else action.help
    default = action.default
    if (
        text is argparse.SUPPRESS
        or not action.option_strings
        or "default" in (text or "").lower()
        or default is None
        or default is False
        or default == ""
        or default == []
        or default is argparse.SUPPRESS
        or isinstance(action, argparse._VersionAction | argparse._HelpAction)
    ):
        return text
    shown = _duration(default) if isinstance(default, timedelta) else str(default)
    return f"{text or ''} (default: {shown.replace('%', '%%')})".lstrip()


def tidy(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand parser :class:`HelpFormatter` and plain text."""
    parser.formatter_class = HelpFormatter
    if parser.description:
        parser.description = plain(parser.description)
    for action in parser._actions:
        action.help = with_default(action)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if isinstance(choice.help, str):
                    choice.help = plain(choice.help)
            seen: set[int] = set()
            for sub in action.choices.values():
                if id(sub) not in seen:  # an alias maps to the same parser
                    seen.add(id(sub))
                    tidy(sub)
