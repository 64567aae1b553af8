"""Training end to end on the CPU: a short run whose loss falls, export, the service loads it; torchrun with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.qa.card import ModelCard
from tests.conftest import wait_for_readyz
from training.export import export_checkpoint
from training.finetune import TrainConfig, TrainSource, train

PRODUCTS = ["Classic", "Gold", "Student", "Travel", "Premier", "Basic", "Family", "Business"]


def write_synthetic_squad(path: Path) -> Path:
    paragraphs = []
    for i, product in enumerate(PRODUCTS):
        context = (
            f"The {product} account has a monthly fee of {i + 2} euros. Cash withdrawals abroad cost {i + 1} percent. "
            f"Cards are replaced within {i + 3} working days."
        )
        qas = []
        for q, answer in (
            (f"What is the monthly fee of the {product} account?", f"{i + 2} euros"),
            ("How long does a card replacement take?", f"{i + 3} working days"),
        ):
            qas.append(
                {
                    "id": f"{product}-{len(qas)}",
                    "question": q,
                    "answers": [{"text": answer, "answer_start": context.index(answer)}],
                }
            )
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "bank", "paragraphs": paragraphs}]}))
    return path


@pytest.fixture(scope="module")
def squad_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_squad(tmp_path_factory.mktemp("data") / "bank.json")


def test_twenty_steps_lower_the_loss_and_the_export_serves(
    tiny_model_dir: Path, squad_file: Path, tmp_path: Path
) -> None:
    out = train(
        TrainConfig(
            base_model=tiny_model_dir,
            output_dir=tmp_path / "run",
            train=[TrainSource(squad_file)],
            dev=squad_file,
            max_steps=20,
            batch_size=4,
            learning_rate=3e-3,
            warmup_ratio=0.1,
            max_seq_len=64,
            stride=16,
            max_question_tokens=24,
            eval_limit=16,
            progress=False,
            name="tiny-trained",
            version="t2",
            seed=1,
        )
    )
    card = ModelCard.load(out)
    hyper = card.hyperparameters
    assert hyper["steps"] == 20
    assert hyper["loss_end"] < hyper["loss_start"] * 0.8, (
        f"loss did not fall: {hyper['loss_start']} -> {hyper['loss_end']}"
    )
    assert hyper["alignment"]["exact"] == 16 and hyper["alignment"]["mismatched"] == 0
    assert card.data[0].questions == 16 and len(card.data[0].sha256) == 64
    assert any(k.startswith("bank") for k in card.eval), "final dev evaluation is stored in the card"
    assert (out / "trainer_state.pt").exists(), "a resumable state is written"

    served = tmp_path / "served"
    weights = export_checkpoint(out, served, rebuild_command="pytest")
    assert weights.stat().st_size < (out / "model.safetensors").stat().st_size * 0.6, "fp16 halves the weights"
    with TestClient(create_app(Settings(model_path=served))) as client:
        wait_for_readyz(client, 30)
        context = "The Gold account has a monthly fee of 3 euros."
        r = client.post(
            "/answer", json={"question": "What is the monthly fee?", "contexts": [{"text": context}], "min_score": 0}
        )
        assert r.status_code == 200
        data = r.json()
        assert data["model"] == {"name": "tiny-trained", "version": "t2"}
        a = data["answers"][0]
        assert context[a["start"] : a["end"]] == a["text"]


def test_resume_continues_from_the_saved_step(tiny_model_dir: Path, squad_file: Path, tmp_path: Path) -> None:
    first = TrainConfig(
        base_model=tiny_model_dir,
        output_dir=tmp_path / "run",
        train=[TrainSource(squad_file)],
        batch_size=4,
        max_seq_len=64,
        stride=16,
        max_question_tokens=24,
        progress=False,
        max_steps=3,
    )
    train(first)
    train(replace(first, max_steps=6, resume=True))
    assert ModelCard.load(tmp_path / "run").hyperparameters["steps"] == 6


def test_torchrun_two_processes_with_gloo(tiny_model_dir: Path, squad_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "app.cli",
        "train",
        "--train",
        str(squad_file),
        "--output",
        str(out),
        "--base-model",
        str(tiny_model_dir),
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--max-seq-len",
        "64",
        "--stride",
        "16",
        "--max-question-tokens",
        "24",
        "--no-progress",
        "--threads",
        "1",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    card = ModelCard.load(out)
    assert card.hyperparameters["steps"] == 4
    assert (out / "model.safetensors").exists()


def _train_command(squad_file: Path, model_dir: Path, out: Path, max_steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app.cli",
        "train",
        "--train",
        f"{squad_file}:3:aug2",
        "--output",
        str(out),
        "--base-model",
        str(model_dir),
        "--max-steps",
        str(max_steps),
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--max-seq-len",
        "64",
        "--stride",
        "16",
        "--max-question-tokens",
        "24",
        "--save-every",
        "3",
        "--eval-limit",
        "4",
        "--no-progress",
        "--threads",
        "1",
        *extra,
    ]


def test_kill_9_then_resume_loses_nothing_beyond_the_last_state(
    tiny_model_dir: Path, squad_file: Path, tmp_path: Path
) -> None:
    """A run killed with SIGKILL and resumed ends with the same weights as a run that was never interrupted."""
    import signal

    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    steps = 120
    whole = tmp_path / "whole"
    done = subprocess.run(
        _train_command(squad_file, tiny_model_dir, whole, steps), env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]

    broken = tmp_path / "broken"
    state = broken / "trainer_state.pt"
    proc = subprocess.Popen(
        _train_command(squad_file, tiny_model_dir, broken, steps),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved_step = torch.load(state, map_location="cpu", weights_only=False)["step"]
    assert 0 < saved_step < steps, f"killed mid-run (state at step {saved_step} of {steps})"

    resumed = subprocess.run(
        _train_command(squad_file, tiny_model_dir, broken, steps, "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {state} at step" in resumed.stdout + resumed.stderr
    card = ModelCard.load(broken)
    assert card.hyperparameters["steps"] == steps
    assert card.data[0].augment_variants == 2 and card.data[0].examples_used == 48
    expected, got = load_file(str(whole / "model.safetensors")), load_file(str(broken / "model.safetensors"))
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, msg=f"{name} differs from the uninterrupted run")
