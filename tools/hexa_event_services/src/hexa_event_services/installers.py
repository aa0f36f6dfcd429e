"""Installers: commands run to completion, apt, Maven (checksums checked), ``go install``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import (
    ServiceError,
    cache_dir,
    say,
)
from .locks import file_lock


def which(name: str, extra: Sequence[Path] = ()) -> str | None:
    for d in extra:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env_extra: dict[str, str] | None = None,
    log: Path | None = None,
    user: str | None = None,
    timeout: float | None = 1800.0,
) -> str:
    """Run a command to completion; raise ServiceError with its output tail on failure."""
    full_env = dict(os.environ)
    if env_extra:
        full_env.update(env_extra)
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs.update(user=user, group=user, extra_groups=[])
    proc = subprocess.run(
        list(argv),
        cwd=str(cwd) if cwd else None,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    out: str = proc.stdout.decode("utf-8", "replace")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(argv)}\n{out}\n")
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-40:])
        raise ServiceError(f"command failed ({proc.returncode}): {' '.join(argv)}\n{tail}")
    return out


def sha1_of(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_maven_sha1(path: Path) -> None:
    """Check a file in the local Maven repo against the .sha1 Maven fetched beside it."""
    sha_file = path.with_name(path.name + ".sha1")
    if not sha_file.is_file():
        raise ServiceError(f"no checksum beside {path} (expected {sha_file.name})")
    expected = sha_file.read_text().split()[0].strip().lower()
    actual = sha1_of(path)
    if actual != expected:
        raise ServiceError(f"sha1 mismatch for {path}: {actual} != {expected}")


_apt_updated = False
_apt_lock = threading.Lock()


def apt_install(*packages: str) -> None:
    global _apt_updated
    if os.geteuid() != 0:
        raise ServiceError(f"need root to apt-get install {' '.join(packages)}; install it first")
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    with _apt_lock, file_lock(cache_dir() / "locks" / "apt.lock"):
        if not _apt_updated:
            say("apt-get update")
            run_command(["apt-get", "update"], env_extra=apt_env)
            _apt_updated = True
        say(f"apt-get install {' '.join(packages)}")
        run_command(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages], env_extra=apt_env
        )


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return tool("java", "openjdk-17-jre-headless", " (JDK 17+ needed)")


def mvn() -> str:
    return tool("mvn", "maven")


def tool(command: str, apt_package: str, need: str = "") -> str:
    """The path of ``command``, installing Debian's ``apt_package`` when it is missing."""
    found = shutil.which(command)
    if found is None:
        apt_install(apt_package)
        found = shutil.which(command)
    if found is None:
        raise ServiceError(f"no {command} on PATH{need}")
    return found


def maven_repo() -> Path:
    return cache_dir() / "m2"


def run_mvn(*args: str, log: Path | None = None) -> str:
    """One Maven run at a time over the shared local repo (it is not made for concurrency)."""
    with file_lock(cache_dir() / "locks" / "maven.lock"):
        return run_command(mvn_cmd(*args), log=log)


def mvn_cmd(*args: str) -> list[str]:
    # -C: fail on checksum mismatch against Maven Central's checksums.
    return [mvn(), "-B", "-q", "-C", f"-Dmaven.repo.local={maven_repo()}", *args]


def go_env() -> dict[str, str]:
    g = cache_dir() / "go"
    return {
        "GOMODCACHE": str(g / "mod"),
        "GOCACHE": str(g / "build"),
        "GOPATH": str(g / "path"),
        "GOFLAGS": "-modcacherw",
        "CGO_ENABLED": "0",
    }


def go_tool() -> str:
    go = which("go", [Path("/usr/local/go/bin")])
    if go is None:
        raise ServiceError("no go toolchain on PATH (Go >= 1.21 needed to build from source)")
    return go


def go_install(module: str, bin_dir: Path, log: Path, *flags: str) -> None:
    """`go install` into a private GOBIN, then move the binaries into ``bin_dir``."""
    tmp_bin = bin_dir.with_name(bin_dir.name + f".gobin-{os.getpid()}")
    shutil.rmtree(tmp_bin, ignore_errors=True)
    tmp_bin.mkdir(parents=True)
    try:
        say(f"go install {module} (first time: ~1-2 min)")
        run_command(
            [go_tool(), "install", *flags, module],
            env_extra={**go_env(), "GOBIN": str(tmp_bin)},
            log=log,
        )
        bin_dir.mkdir(parents=True, exist_ok=True)
        for f in tmp_bin.iterdir():
            f.replace(bin_dir / f.name)
    finally:
        shutil.rmtree(tmp_bin, ignore_errors=True)
