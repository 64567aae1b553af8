"""vqa promote / rollback with the real model: a worse checkpoint is refused, an equal one registered and served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.cli import main
from app.qa.card import ModelCard
from app.qa.registry import ModelRegistry, version_id
from tests.conftest import DEFAULT_MODEL_DIR as DEFAULT_MODEL_PATH
from tests.conftest import REPO_ROOT

SQUAD_DEV = REPO_ROOT.parent / "shared" / "data" / "squad-v1.1-dev.json.gz"
pytestmark = pytest.mark.skipif(not SQUAD_DEV.exists(), reason=f"SQuAD dev not found at {SQUAD_DEV}")


def copy_of_default(target: Path, version: str) -> Path:
    shutil.copytree(DEFAULT_MODEL_PATH, target)
    card = ModelCard.load(target)
    card.version = version
    card.save(target)
    return target


def sabotaged(target: Path) -> Path:
    """The default model with its span head flipped: it now prefers the least likely spans."""
    copy_of_default(target, "sabotaged")
    weights = load_file(str(target / "model.safetensors"))
    weights["qa_outputs.weight"] = -weights["qa_outputs.weight"]
    weights["qa_outputs.bias"] = -weights["qa_outputs.bias"]
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    assert not torch.equal(load_file(str(target / "model.safetensors"))["qa_outputs.weight"],
                           load_file(str(DEFAULT_MODEL_PATH / "model.safetensors"))["qa_outputs.weight"])  # fmt: skip
    return target


def promote(candidate: Path, registry: Path, *extra: str) -> int:
    return main(["promote", str(candidate), "--registry", str(registry), "--squad-dev", str(SQUAD_DEV),
                 "--squad-limit", "20", "--domain-limit", "10", "--feedback-holdout", "skip", "--threads", "2",
                 "--no-progress", *extra])  # fmt: skip


def test_a_worse_checkpoint_is_refused_and_an_equal_one_is_promoted_then_rolled_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "models" / "registry.json"
    monkeypatch.setenv("VQA_MODEL_PATH", str(DEFAULT_MODEL_PATH))
    assert promote(sabotaged(tmp_path / "worse"), registry) == 1
    out = capsys.readouterr()
    assert "| squad-dev | 20 |" in out.out and "| domain-test | 10 |" in out.out and "REGRESSION" in out.out
    assert "feedback-holdout" in out.out and "skipped" in out.out
    assert "REFUSED" in out.err
    assert not registry.exists(), "a refused candidate leaves the registry untouched"

    assert promote(copy_of_default(tmp_path / "same", "0.1.1-same"), registry) == 0
    out = capsys.readouterr().out
    assert "PROMOTED" in out and "+0.00" in out
    state = ModelRegistry.load(registry)
    default_id = version_id(ModelCard.load(DEFAULT_MODEL_PATH))
    same_id = version_id(ModelCard.load(tmp_path / "same"))
    assert state.serving == same_id and same_id.endswith("-0.1.1-same")
    assert [(e.action, e.serving) for e in state.history] == [("register", default_id), ("promote", same_id)]
    gates = state.history[-1].details["gates"]
    assert {g["gate"] for g in gates} == {"squad-dev", "domain-test"} and all(g["passed"] for g in gates)

    assert main(["rollback", "--registry", str(registry)]) == 0
    assert ModelRegistry.load(registry).serving == default_id
    assert main(["rollback", "--registry", str(registry)]) == 1, "nothing served before the first version"
    assert "first version" in capsys.readouterr().err
    listing = main(["models", "list", "--registry", str(registry)])
    assert listing == 0 and f"* {default_id}" in capsys.readouterr().out
    assert json.loads(registry.read_text())["serving"] == default_id
