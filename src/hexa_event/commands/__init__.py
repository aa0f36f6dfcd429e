"""The operator commands of ``hexa-event``: tail, publish, request, dlq, doctor, outbox status.

:func:`add_commands` registers them on the ``hexa-event`` parser; each command lives in its
own module and runs through :func:`run_command`, which turns a
:class:`~hexa_event.commands._common.CommandError` into its exit code and message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from . import dlq, doctor, publish, request, status, tail
from ._common import EXIT_CODES, LONGEST, CommandError, database_url_problem, printable

__all__ = [
    "EXIT_CODES",
    "LONGEST",
    "CommandError",
    "add_commands",
    "database_url_problem",
    "invoke",
    "printable",
]


def add_commands(commands: Any) -> None:
    """Add ``tail``, ``publish``, ``request``, ``dlq`` and ``doctor``, and ``outbox status``
    when the ``outbox`` group exists already."""
    for module in (tail, publish, request, dlq, doctor):
        module.add(commands)
    mine = [commands.choices[name] for name in ("tail", "publish", "request", "dlq", "doctor")]
    outbox = commands.choices.get("outbox")
    if outbox is not None:
        for action in outbox._actions:
            if isinstance(action, argparse._SubParsersAction):
                status.add(action)
                mine.append(action.choices["status"])
    for parser in mine:
        _wrap(parser)


def _wrap(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _wrap(sub)
    if parser.get_default("coro") is not None:
        parser.set_defaults(func=lambda args: asyncio.run(invoke(args)))


async def invoke(args: argparse.Namespace) -> int:
    """Run a parsed operator command in the running loop; return its exit status.

    A :class:`CommandError` is printed (``hexa-event: error: ...``) and becomes its code.
    """
    try:
        return int(await args.coro(args))
    except CommandError as exc:
        print(f"hexa-event: error: {printable(str(exc))}", file=sys.stderr)
        return exc.code
