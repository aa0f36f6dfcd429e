"""``hexa-event run MODULE:ATTR``: the command-line face of :func:`hexa_event.runner.run`."""

from __future__ import annotations

import argparse
from typing import Any

from ..numbers import whole_number

_DOC = """Run receivers, outbox relays and cleaners as a service until SIGTERM or SIGINT.

MODULE:ATTR names a Receiver, a relay or cleaner, a list of them, or a factory (a sync or
async function, or an async generator) that builds them; worker processes need a factory.
The first SIGTERM/SIGINT stops fetching, lets running and queued handlers finish within
each receiver's drain_timeout, writes every settlement, leaves the groups and exits 0; a
second one stops faster (handlers cancelled, their events given back).
"""


def _port(text: str) -> int:
    value = whole_number(text, 0, 65535)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


_MOST_WORKERS = 1024
"""More worker processes than any machine runs usefully: a typo, not a plan."""


def _workers(text: str) -> int:
    value = whole_number(text, 1, _MOST_WORKERS)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"expected a number of worker processes from 1 to {_MOST_WORKERS}, got {text!r}"
        )
    return value


def _restarts(text: str) -> int:
    value = whole_number(text, 0)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"expected a number of restarts from 0 (give up at the first quick death), got {text!r}"
        )
    return value


def add_run_command(commands: Any) -> None:
    """``hexa-event run ...``"""
    p = commands.add_parser(
        "run",
        help="run receivers, relays and cleaners as a service (SIGTERM drains)",
        description=_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="MODULE:ATTR", help="e.g. billing.service:build")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes under a supervisor (default 1: no supervisor)",
    )
    p.add_argument(
        "--http-port",
        type=_port,
        default=None,
        help="serve /livez, /readyz and /metrics on this port (with --workers N, worker i "
        "serves PORT+i)",
    )
    p.add_argument(
        "--http-host",
        default="0.0.0.0",
        help="address of the probe server (default 0.0.0.0: reachable from outside a "
        "container; 127.0.0.1 keeps it local)",
    )
    p.add_argument("--reload", action="store_true", help="restart on .py changes (development)")
    p.add_argument(
        "--reload-dir",
        action="append",
        default=None,
        metavar="DIR",
        help="directory to watch with --reload (repeatable; default: --app-dir)",
    )
    p.add_argument(
        "--app-dir",
        default=".",
        help="directory put first on sys.path to import MODULE (default: the current one)",
    )
    p.add_argument(
        "--max-restarts",
        type=_restarts,
        default=5,
        help="with --workers: give up on a worker that died this many times in a row "
        "within 10s of starting (default 5)",
    )
    p.add_argument(
        "--no-gc-tuning",
        dest="gc_tuning",
        action="store_false",
        help="leave the garbage collector alone (by default the heap is frozen once started, "
        "gc.freeze(), so full collections skip it: docs/deploy.md)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from . import run

    return run(
        args.target,
        workers=args.workers,
        reload=args.reload,
        reload_dirs=args.reload_dir,
        http_port=args.http_port,
        http_host=args.http_host,
        app_dir=args.app_dir,
        max_restarts=args.max_restarts,
        gc_tuning=args.gc_tuning,
    )
