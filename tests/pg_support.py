"""A throwaway PostgreSQL cluster for the store tests: ``initdb`` into a temporary folder,
``postgres`` on a free port of 127.0.0.1 (its socket in that folder too), one database per test
made from a migrated template, everything removed at the end.

The binaries are Debian's ``postgresql-15`` (``pg_config --bindir``, else
/usr/lib/postgresql/15/bin). ``initdb`` and ``postgres`` refuse to run as root: as root the
cluster runs as ``nobody`` (setpriv), its folder owned by nobody. Connections over TCP need
the cluster's password, which the tests hand over as libpq's ``PGPASSWORD`` (never in the URL).
A plain module, not a conftest: the fixtures are in conftest.py.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

#: the cluster's superuser (the role the tests' stores connect as)
ROLE = "tmops_test"
_NOBODY = 65534
_FALLBACK_BINDIR = Path("/usr/lib/postgresql/15/bin")


def integrity_errors() -> tuple[type[Exception], ...]:
    """The exceptions a broken constraint raises, of each backend installed."""
    return _errors(sqlite3.IntegrityError, "IntegrityError")


def database_errors() -> tuple[type[Exception], ...]:
    """The exceptions a refused statement raises, of each backend installed."""
    return _errors(sqlite3.DatabaseError, "Error")


def _errors(sqlite_error: type[Exception], psycopg_name: str) -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite_error,)
    return (sqlite_error, getattr(psycopg, psycopg_name))


def pg_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None where PostgreSQL is not installed."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and (candidate / "initdb").is_file():
            return candidate
    return _FALLBACK_BINDIR if (_FALLBACK_BINDIR / "initdb").is_file() else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgCluster:
    """One ``postgres`` server of the test session; :meth:`new_database` hands out databases."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = secrets.token_urlsafe(16)
        self._as_root = os.getuid() == 0
        # as root, in /tmp: nobody must reach the folder, and $TMPDIR may be a private one
        parent = "/tmp" if self._as_root else None
        self.root = Path(tempfile.mkdtemp(prefix="tmops-pg-", dir=parent))
        self.data = self.root / "data"
        self.port = _free_port()
        self._count = 0

    def _argv(self, *argv: str) -> list[str]:
        if not self._as_root:
            return list(argv)
        user = str(_NOBODY)
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", *argv]

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            self._argv(*argv), cwd=self.root, capture_output=True, text=True, check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_root:  # the server runs as nobody: its folder must be nobody's
            os.chown(self.root, _NOBODY, _NOBODY)
            os.chown(pwfile, _NOBODY, _NOBODY)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", ROLE, "--no-sync",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
            "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        pwfile.unlink()
        for attempt in range(3):  # a port found free may be taken before the server binds it
            try:
                self._start_server()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = _free_port()
        self._admin("CREATE DATABASE tmops_template")

    def _start_server(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
            "-l", str(self.root / "server.log"), "-o", options,
        )  # fmt: skip

    def restart(self, down_s: float) -> None:
        """The server stopped (``-m fast``: every connection cut at once, what was committed
        kept; this cluster runs without fsync, so a crash could lose commits), down
        ``down_s``, then up again on its port."""
        self._run(str(self.bindir / "pg_ctl"), "stop", "-m", "fast", "-D", str(self.data))
        time.sleep(down_s)
        self._start_server()

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), password=self.password, autocommit=True) as db:
            db.execute(sql)  # a name made here, never a test's input

    def url(self, database: str) -> str:
        """The URL of ``database``, without the password (that comes from ``PGPASSWORD``)."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        self._count += 1
        name = f"tmops_test_{self._count}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE tmops_template")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
