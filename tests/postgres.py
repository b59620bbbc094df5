"""A real PostgreSQL server for tests: Debian's `postgresql` binaries, a cluster in a temporary folder, a free
port, trust authentication on 127.0.0.1 only. Started by a fixture, stopped (and its folder removed) after;
tests can stop and start it again to see what the service does while the database is down.

PostgreSQL refuses to run as root, so under root (CI, containers) its commands run as the `postgres` user
that the Debian package creates, in a folder outside pytest's root-only temporary tree.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from tests.helpers import free_port

USER = "seedlings"


def bindir() -> Path | None:
    """The folder of initdb/postgres: Debian keeps them in /usr/lib/postgresql/<major>/bin, off the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def require_postgres() -> Path:
    found = bindir()
    if found is None or (os.geteuid() == 0 and not _has_user("postgres")):
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is required in CI (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    return found


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class PostgresServer:
    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="seedlings-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.running = False
        self.data.mkdir()
        if self.as_root:
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(self.root, "postgres", "postgres")
        self._run([self.bin / "initdb", "-D", self.data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"])

    def _cmd(self, cmd: list) -> list[str]:
        cmd = [str(c) for c in cmd]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def _run(self, cmd: list) -> None:
        proc = subprocess.run(self._cmd(cmd), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and wait until it accepts connections (pg_ctl -w)."""
        options = (f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off -c full_page_writes=off "
                   "-c max_connections=60")
        proc = subprocess.run(self._cmd([self.bin / "pg_ctl", "-D", self.data, "-l", self.root / "server.log",
                                         "-o", options, "-w", "-t", "60", "start"]),
                              capture_output=True, text=True, timeout=90)
        log = self.root / "server.log"
        assert proc.returncode == 0, proc.stdout + proc.stderr + (log.read_text()[-3000:] if log.is_file() else "")
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as when a database server goes away."""
        if self.running:
            self._run([self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])
            self.running = False

    def new_database(self) -> str:
        """A fresh, empty database on this server; its URL."""
        import sqlalchemy as sa

        name = "t_" + uuid.uuid4().hex[:12]
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
