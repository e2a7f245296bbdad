"""A throwaway PostgreSQL cluster for the tests: real server, Unix socket only.

``postgres_cluster`` (session-scoped) runs ``initdb`` in a fresh temporary directory and
starts the server with ``listen_addresses = ''`` (no TCP at all) and its socket in that
directory, ``fsync`` left on; at the end of the session it stops that server (``pg_ctl stop``
on its own data directory) and removes the directory. ``postgres_url`` gives each test a
database of its own (``CREATE DATABASE`` from ``template0``), dropped afterwards.

``initdb`` refuses to run as root, so as root (CI) the cluster belongs to the ``postgres``
system user (``runuser``); otherwise to the current user. The binaries come from ``PATH`` or
the newest ``/usr/lib/postgresql/*/bin``. Nothing here skips: a server that cannot start fails
every test that needs it, loudly, with the server's log.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "postgres"
PASSWORD_USER = "agentcron_pw"
"""A role that must log in with a password (scram-sha-256), for the password tests."""
PASSWORD = "s3cret pass/word"

_SETTINGS = {
    "listen_addresses": "''",
    "shared_buffers": "16MB",
    "max_connections": "50",
    "max_wal_size": "256MB",
    "log_min_messages": "warning",
    "log_connections": "off",
}
_HBA = f"""\
local all {PASSWORD_USER} scram-sha-256
local all all trust
"""


def find_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: ``PATH``, else the newest Debian install."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
            "install it (apt-get install postgresql): the journal tests need a real server"
        )
    return candidates[-1].parent


class PostgresCluster:
    """One cluster in ``base`` (its data directory and its socket), owned by ``owner``."""

    def __init__(self, base: Path, bindir: Path, owner: str | None) -> None:
        self.base = base
        self.data = base / "data"
        self.socket_dir = base
        self.log = base / "server.log"
        self.bindir = bindir
        self.owner = owner
        self._names = itertools.count(1)

    @classmethod
    def create(cls) -> PostgresCluster:
        """A new, initialised (not yet started) cluster in a fresh temporary directory."""
        bindir = find_bindir()
        owner = SUPERUSER if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="agentcron-pg-"))
        if owner is not None:
            try:
                entry = pwd.getpwnam(owner)
            except KeyError:
                shutil.rmtree(base)
                raise RuntimeError(
                    f"running as root, but there is no {owner!r} user to own the test "
                    "cluster (initdb refuses root); install PostgreSQL's package"
                ) from None
            os.chown(base, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
        cluster = cls(base, bindir, owner)
        try:
            cluster._run(
                "initdb",
                "-D",
                str(cluster.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",  # initdb's own flush; the server itself keeps fsync on
            )
            (cluster.data / "pg_hba.conf").write_text(_HBA)
        except BaseException:
            cluster.remove()
            raise
        return cluster

    def _command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        if self.owner is not None:
            return ["runuser", "-u", self.owner, "--", *argv]
        return argv

    def _run(self, tool: str, *args: str) -> str:
        result = subprocess.run(
            self._command(tool, *args), capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"{self._log_tail()}"
            )
        return result.stdout

    def _log_tail(self) -> str:
        try:
            return "\nserver log:\n" + self.log.read_text()[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = " ".join(f"-c {key}={value}" for key, value in _SETTINGS.items())
        options += f" -c unix_socket_directories='{self.socket_dir}'"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop this cluster's server (fast: open sessions are disconnected)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the server if it runs, then delete the directory."""
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str, user: str = SUPERUSER) -> str:
        """The URL of ``database`` over this cluster's Unix socket."""
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one SQL statement as the superuser with ``psql``; its unaligned output."""
        argv = [
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-c",
            statement,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {statement}\n{result.stderr}{self._log_tail()}")
        return result.stdout.strip()

    def create_database(self, owner: str = SUPERUSER) -> str:
        """A new, empty database (its name) owned by ``owner``."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} OWNER {owner} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_cluster() -> PostgresCluster:
    """A started cluster with the password role; the caller removes it."""
    cluster = PostgresCluster.create()
    try:
        cluster.start()
        cluster.sql(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
    except BaseException:
        cluster.remove()
        raise
    return cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL server (started on first use, removed at the end)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database for this test (its name), dropped afterwards."""
    name = postgres_cluster.create_database()
    try:
        yield name
    finally:
        postgres_cluster.drop_database(name)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster, postgres_database: str) -> str:
    """The URL of this test's fresh database (Unix socket, superuser, no password)."""
    return postgres_cluster.url(postgres_database)
