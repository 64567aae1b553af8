"""A throwaway PostgreSQL server for the tests: Debian's binaries, a fresh cluster in a temp dir, a free port.

As root the cluster runs as the ``postgres`` system user (PostgreSQL refuses to run as root); otherwise as the
current user. Password authentication (scram) on 127.0.0.1 only, like a real deployment.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kg.embedded import free_port


def postgres_bindir() -> Path | None:
    """Debian installs the server under /usr/lib/postgresql/<major>/bin (not on PATH); newest major wins."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@dataclass
class PostgresServer:
    root: Path
    port: int
    user: str
    password: str
    database: str
    bindir: Path
    run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.run_as,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        return done

    @classmethod
    def start(cls, database: str = "vqa_test") -> PostgresServer:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: scripts/test.sh installs Debian's 'postgresql' package")
        run_as = "postgres" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="vqa-pg-"))
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        password = secrets.token_hex(16)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if run_as is not None:
            os.chown(pwfile, pwd.getpwnam(run_as).pw_uid, pwd.getpwnam(run_as).pw_gid)
        server = cls(root, free_port(), "vqa", password, database, bindir, run_as)
        server._run(
            "initdb", "-D", str(root / "data"), "-U", "vqa", "--auth=scram-sha-256", f"--pwfile={pwfile}",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        options = f"-p {server.port} -c listen_addresses=127.0.0.1 -k {root} -c max_connections=50"
        server._run("pg_ctl", "-D", str(root / "data"), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        server.create_database(database)
        return server

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname="postgres",
            autocommit=True,
        ) as connection:  # fmt: skip
            connection.execute(f'CREATE DATABASE "{name}"')

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
