"""The embedded server's lifecycle across owners: a server orphaned by a dead owner is stopped at the next start
(its database lock freed); a server whose owner still runs is never touched.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from neo4j import GraphDatabase

from kg.embedded import EmbeddedGraph, EmbeddedGraphError

REPO = Path(__file__).resolve().parents[2]
# An owner that starts a server which outlives it, then dies by SIGKILL: what an older version (no parent-death
# signal) left behind after a kill -9, holding the database lock.
ABANDONING_OWNER = """
import os, signal, sys
from pathlib import Path
from kg.embedded import EmbeddedGraph
options = {"die_with_parent": False} if "die_with_parent" in EmbeddedGraph.__dataclass_fields__ else {}
graph = EmbeddedGraph(root=Path(sys.argv[1]), **options).start()
print(graph.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_orphaned_server_is_stopped_at_start_and_a_live_owners_server_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "graph"
    owner = subprocess.run(
        [sys.executable, "-c", ABANDONING_OWNER, str(root)], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr[-2000:]
    orphan = psutil.Process(int(owner.stdout.split()[0]))
    graph = EmbeddedGraph(root=root)
    try:
        assert orphan.is_running() and orphan.status() != psutil.STATUS_ZOMBIE, "the orphan holds the lock"
        graph.start()
        with GraphDatabase.driver(graph.uri, auth=(graph.user, graph.password)) as driver:
            with driver.session(database=graph.database) as session:
                assert session.run("RETURN 1 AS ok").single()["ok"] == 1
        assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE, "the orphan was stopped"

        second = EmbeddedGraph(root=root)
        with pytest.raises(EmbeddedGraphError, match="in use by the graph server"):
            second.start()
        assert graph.running, "the live owner's server is untouched"
    finally:
        graph.stop()
        if orphan.is_running():
            orphan.kill()
