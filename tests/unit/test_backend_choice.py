"""Which backend serves a checkpoint: VQA_BACKEND and the card's cpu_backend (no weights are loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.qa.backends import ModelLoadError, OnnxBackend, TorchBackend, select_backend, weights_sha256
from app.qa.card import ModelCard, OnnxExport


def checkpoint_with_graph(tmp_path: Path, weights: bytes = b"weights") -> tuple[Path, ModelCard]:
    (tmp_path / "model.safetensors").write_bytes(weights)
    (tmp_path / "model_int8.onnx").write_bytes(b"graph")
    card = ModelCard(
        name="m",
        cpu_backend="onnx-int8",
        onnx=[
            OnnxExport(
                file="model_int8.onnx",
                precision="int8",
                opset=17,
                sha256="-",
                weights_sha256=weights_sha256(tmp_path),
                onnxruntime_version="-",
            )
        ],
    )
    card.save(tmp_path)
    return tmp_path, card


def test_auto_follows_the_card_on_the_cpu_and_keeps_torch_on_a_gpu(tmp_path: Path) -> None:
    path, card = checkpoint_with_graph(tmp_path)
    on_cpu = select_backend("auto", path, card, device="cpu")
    assert isinstance(on_cpu, OnnxBackend) and on_cpu.name == "onnx-int8"
    # a GPU runs the torch weights (bf16) whatever the card prefers for CPUs
    assert isinstance(select_backend("auto", path, card, device="cuda"), TorchBackend)
    assert isinstance(select_backend("torch", path, card, device="cpu"), TorchBackend)
    assert select_backend("onnx", path, card, device="cpu").name == "onnx-int8"


def test_an_explicit_onnx_backend_refuses_a_gpu_and_a_missing_graph(tmp_path: Path) -> None:
    path, card = checkpoint_with_graph(tmp_path)
    with pytest.raises(ModelLoadError, match="runs on the CPU"):
        select_backend("onnx-int8", path, card, device="cuda:0")
    with pytest.raises(ModelLoadError, match=r"no onnx-fp32 graph.*vqa export --checkpoint \S+ --onnx$"):
        select_backend("onnx-fp32", path, card, device="cpu")
    (path / "model_int8.onnx").unlink()
    with pytest.raises(ModelLoadError, match="model_int8.onnx is missing"):
        select_backend("onnx-int8", path, card, device="cpu")
    assert isinstance(select_backend("auto", path, card, device="cpu"), TorchBackend)


def test_new_weights_make_the_graph_stale(tmp_path: Path) -> None:
    path, card = checkpoint_with_graph(tmp_path)
    (path / "model.safetensors").write_bytes(b"retrained weights")
    assert isinstance(select_backend("auto", path, card, device="cpu"), TorchBackend)
    with pytest.raises(ModelLoadError, match="stale"):
        select_backend("onnx", path, card, device="cpu")


def test_the_setting_takes_known_backends_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VQA_BACKEND", "onnx-int8")
    assert Settings().backend == "onnx-int8"
    monkeypatch.setenv("VQA_BACKEND", "tensorrt")
    with pytest.raises(ValidationError, match="backend"):
        Settings()
    monkeypatch.delenv("VQA_BACKEND")
    assert Settings().backend == "auto"


def test_the_card_round_trips_its_graphs(tmp_path: Path) -> None:
    path, card = checkpoint_with_graph(tmp_path)
    loaded = ModelCard.load(path)
    assert loaded.cpu_backend == "onnx-int8" and loaded.onnx == card.onnx
    assert loaded.onnx_export("onnx-fp32") is None
