"""Test certificates made with the ``openssl`` command line: a CA, server and client
certificates it signs, and a second CA nobody trusts (for the "unknown CA" checks).

Keys are unencrypted PKCS#8 PEM files, certificates PEM; everything lives in the service's
run dir and is made again whenever the service starts fresh. For tests only.
"""

from __future__ import annotations

from pathlib import Path

from .installers import run_command, tool

DAYS = "30"


def _openssl() -> str:
    return tool("openssl", "openssl")


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key) as ``<name>.pem`` and ``<name>.key``."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    run_command(
        [
            _openssl(),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            DAYS,
            "-subj",
            f"/CN=hexa-event test {name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )
    return cert, key


def make_cert(
    directory: Path, name: str, ca: tuple[Path, Path], *, server: bool
) -> tuple[Path, Path]:
    """A certificate for ``name`` signed by ``ca``: for 127.0.0.1/localhost when ``server``,
    else a client certificate. Returns (certificate, key)."""
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
    ext_file = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if server:
        lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
    ext_file.write_text("\n".join(lines) + "\n")
    openssl = _openssl()
    subject = f"/CN={'localhost' if server else name}"
    new_key = ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr)]
    run_command([openssl, *new_key, "-subj", subject])
    sign = ["x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1])]
    serial = ["-CAcreateserial", "-out", str(cert), "-days", DAYS, "-extfile", str(ext_file)]
    run_command([openssl, *sign, *serial])
    csr.unlink()
    ext_file.unlink()
    return cert, key


def make_test_pki(directory: Path) -> None:
    """``ca``, ``server`` and ``client`` (signed by ``ca``), and ``other-ca`` in
    ``directory``; ``server-keystore.pem`` is the server's key followed by its chain."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca")
    server = make_cert(directory, "server", ca, server=True)
    make_cert(directory, "client", ca, server=False)
    make_ca(directory, "other-ca")
    (directory / "server-keystore.pem").write_text(
        server[1].read_text() + server[0].read_text() + ca[0].read_text()
    )
    for p in directory.iterdir():
        p.chmod(0o600 if p.suffix == ".key" else 0o644)
