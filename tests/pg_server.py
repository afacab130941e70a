"""A real PostgreSQL server for the tests: initdb + pg_ctl in a temporary folder, on a free port, its unix socket in
that folder, as the postgres user when the tests run as root (initdb refuses root); stopped and removed at the end.

    from pg_server import postgres  # noqa: F401 - the session fixture
    def test_x(postgres): db = database(postgres.url("mydb"))

Skips (with the reason) only where the PostgreSQL binaries are absent; .ci/run installs them, so CI never skips.
"""
from __future__ import annotations

import contextlib
import getpass
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian's /usr/lib/postgresql/N/bin, pg_config --bindir, or PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "initdb").is_file():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    folder: Path  # data directory's parent and the unix socket's directory
    port: int
    user: str  # a superuser

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@/{dbname}?host={self.folder}&port={self.port}"

    def admin(self, dbname: str = "postgres"):
        """A superuser connection in autocommit mode (CREATE DATABASE, roles, fixtures' own writes)."""
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self, name: str) -> str:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def running_postgres(bindir: Path):
    """A PostgreSQL server for as long as the context lasts (also what bench/engines.py starts)."""
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")  # KeyError: no postgres user to run it as
    folder = Path(tempfile.mkdtemp(prefix="sqlft-pg-"))
    if os.geteuid() == 0:
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    user = "postgres" if os.geteuid() == 0 else getpass.getuser()
    port = _free_port()
    data, log = folder / "data", folder / "server.log"
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "-E",
                                        "UTF8", "--locale=C", "--no-sync"]), check=True, capture_output=True)
        options = (f"-p {port} -k {folder} -c listen_addresses='' -c fsync=off -c full_page_writes=off "
                   "-c synchronous_commit=off -c max_connections=50")
        started = subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                                                  "-t", "60", "-o", options, "start"]), capture_output=True, text=True)
        if started.returncode != 0:
            detail = log.read_text()[-2000:] if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start: {detail}")
        try:
            yield PgServer(folder, port, user)
        finally:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                            "stop"]), capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them "
                    "(apt-get install postgresql)")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
    with running_postgres(bindir) as server:
        yield server
