"""What a newcomer hits in the first hour: a missing extra named with how to install it
(hexa-event is not on PyPI, so never ``pip install 'hexa-event[x]'``), a target whose own
import fails, and a stop that reaches a worker still importing its target."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hexa_event.errors import ConfigurationError
from hexa_event.runner.service import Service
from hexa_event.runner.supervisor import Supervisor
from hexa_event.runner.targets import load_target
from hexa_event.testing import eventually


def test_a_cli_command_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    """`outbox status` without [sql] said "ModuleNotFoundError: No module named
    'sqlalchemy'" and exit 1; it names the extra and how to install it, exit 2."""
    db = tmp_path / "app.db"
    db.touch()
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "from hexa_event.cli import main\n"
        f"sys.exit(main(['outbox', 'status', '--db', 'sqlite:///{db}']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "'sqlalchemy'" in done.stderr
    assert "pip install -e '.[sql]'" in done.stderr
    assert "ModuleNotFoundError" not in done.stderr


def test_the_probe_server_without_uvicorn_says_how_to_install_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hexa_event.runner.probes import ProbeServer

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ConfigurationError) as caught:
        ProbeServer(Service([]), host="127.0.0.1", port=1)
    assert "pip install -e '.[serve]'" in str(caught.value)
    assert "pip install 'hexa-event[serve]'" not in str(caught.value)  # not on PyPI


def _module(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


def test_a_target_importing_a_missing_extra_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(tmp_path, "fh_needs_sql", "import sqlalchemy\n\ndef build(): ...\n")
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError) as caught:
        load_target("fh_needs_sql:build", app_dir=None)
    text = str(caught.value)
    assert "'fh_needs_sql'" in text
    assert "'sqlalchemy'" in text
    assert "pip install -e '.[sql]'" in text


def test_a_missing_dependency_whose_name_prefixes_the_target_is_not_a_wrong_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module was found; what it imports is missing. Old code took the prefix match
    'fhbill' of 'fhbilling' for the target itself and said to run from its directory."""
    _module(tmp_path, "fhbilling", "import fhbill\n\ndef build(): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError) as caught:
        load_target("fhbilling:build", app_dir=None)
    text = str(caught.value)
    assert "run from the directory" not in text
    assert "'fhbill'" in text
    assert "install" in text


async def test_a_stop_reaching_a_worker_still_importing_its_target_exits_0(
    tmp_path: Path,
) -> None:
    """The forwarded SIGTERM ends a worker before its signal handlers exist (still importing
    its target; or exiting after its drain when a second Ctrl-C came): it stopped as asked,
    yet the supervisor said "workers stopped with errors: [(0, -15)]" and exited 1."""
    marker = tmp_path / "importing"
    _module(
        tmp_path,
        "fh_slow_import",
        f"""
        import pathlib, time
        pathlib.Path({str(marker)!r}).touch()
        while True:
            time.sleep(0.05)
        """,
    )
    supervisor = Supervisor("fh_slow_import:build", workers=1, app_dir=str(tmp_path))
    running = asyncio.create_task(supervisor.run())
    await eventually(marker.exists, within=60, what="the worker importing its target")
    supervisor.stop()
    assert await asyncio.wait_for(running, 60) == 0
