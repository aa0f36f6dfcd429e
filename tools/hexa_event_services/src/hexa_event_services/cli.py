"""The ``scripts/services`` command line: up, down, status, logs, restart, install, env."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .config import (
    GROUPS,
    SERVICE_NAMES,
    ServiceError,
    cache_dir,
)
from .registry import down, get_service, names_of, service_env, up


def _cmd_status(names: Sequence[str], as_json: bool) -> int:
    rows = [get_service(n).status() for n in names_of(names)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':16} {'state':10} {'pid':>7} {'rss MiB':>8} {'uptime':>8}  url / listening")
    for r in rows:
        rss = f"{r['rss_mb']:.0f}" if r["rss_mb"] is not None else "-"
        up_s = f"{r['uptime_s']:.0f}s" if r["uptime_s"] is not None else "-"
        listen = ",".join(r["listening"]) or "-"
        print(
            f"{r['name']:16} {r['state']:10} {r['pid'] or '-':>7} {rss:>8} {up_s:>8}  "
            f"{r['url']}  [{listen}] v{r['version']}{'' if r['installed'] else ' (not installed)'}"
        )
    return 0


def _follow(path: Path) -> None:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        while True:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="services",
        description="Install, start, check and stop hexa-event's test services "
        f"({', '.join(SERVICE_NAMES)}; on demand: {', '.join(GROUPS)}). "
        f"Cache and state: {cache_dir()}",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s_up = sub.add_parser("up", help="install if needed, start and wait until ready")
    s_up.add_argument("names", nargs="*")
    s_up.add_argument("--keep-data", action="store_true", help="reuse data of a stopped service")
    s_up.add_argument("--timeout", type=float, default=None, help="readiness deadline (s)")
    s_down = sub.add_parser("down", help="stop gracefully (SIGKILL after a timeout)")
    s_down.add_argument("names", nargs="*")
    s_down.add_argument("--kill", action="store_true", help="SIGKILL at once")
    s_st = sub.add_parser("status", help="state, pid, RSS, listening sockets")
    s_st.add_argument("names", nargs="*")
    s_st.add_argument("--json", action="store_true")
    s_logs = sub.add_parser("logs", help="print the tail of a service's log")
    s_logs.add_argument("name")
    s_logs.add_argument("-n", type=int, default=100)
    s_logs.add_argument("-f", "--follow", action="store_true")
    s_re = sub.add_parser("restart", help="graceful stop, then start keeping data")
    s_re.add_argument("names", nargs="+")
    s_re.add_argument("--fresh", action="store_true", help="wipe data on restart")
    s_re.add_argument("--timeout", type=float, default=None)
    s_in = sub.add_parser("install", help="download/build into the cache only")
    s_in.add_argument("names", nargs="*")
    sub.add_parser("env", help="print the endpoint variables as shell exports")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[services] %(message)s", stream=sys.stderr)

    try:
        if args.cmd == "up":
            up(args.names, fresh=not args.keep_data, timeout=args.timeout)
        elif args.cmd == "down":
            down(args.names, kill=args.kill)
        elif args.cmd == "status":
            return _cmd_status(args.names, args.json)
        elif args.cmd == "logs":
            svc = get_service(args.name)
            print(svc.tail_log(args.n))
            if args.follow:
                with contextlib.suppress(KeyboardInterrupt):
                    _follow(svc.log_path)
        elif args.cmd == "restart":
            for n in names_of(args.names):
                get_service(n).restart(keep_data=not args.fresh, timeout=args.timeout)
        elif args.cmd == "install":
            for n in names_of(args.names):
                get_service(n).install()
        elif args.cmd == "env":
            for k, v in service_env().items():
                print(f"export {k}={v}")
    except ServiceError as e:
        print(f"[services] ERROR: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"[services] ERROR: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.EPIPE:
            return 0
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
