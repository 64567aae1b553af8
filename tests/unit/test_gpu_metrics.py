"""GPU metrics, read at scrape time from torch.cuda (faked here: these machines have no GPU)."""

from __future__ import annotations

import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import ServiceMetrics

GIB = 1024**3


def _gpu_samples(metrics: ServiceMetrics) -> dict[str, tuple[dict[str, str], float]]:
    text = generate_latest(metrics.registry).decode()
    return {
        s.name: (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("vqa_gpu_")
    }


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, utilisation: int | None) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * GIB, 141 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 3 * GIB)

    def utilization(device: object = None) -> int:
        if utilisation is None:
            raise ModuleNotFoundError("pynvml does not seem to be installed")
        return utilisation

    monkeypatch.setattr(torch.cuda, "utilization", utilization)


def test_gpu_memory_and_utilisation_in_base_units(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, utilisation=37)
    metrics = ServiceMetrics()
    assert _gpu_samples(metrics) == {}, "nothing before the model is on a GPU"
    metrics.watch_gpu(torch.device("cuda", 0))
    samples = _gpu_samples(metrics)
    assert samples["vqa_gpu_memory_used_bytes"] == ({"device": "cuda:0"}, 41 * GIB)
    assert samples["vqa_gpu_memory_total_bytes"] == ({"device": "cuda:0"}, 141 * GIB)
    assert samples["vqa_gpu_memory_allocated_bytes"] == ({"device": "cuda:0"}, 3 * GIB)
    assert samples["vqa_gpu_utilization_ratio"] == ({"device": "cuda:0"}, 0.37)


def test_without_nvml_the_memory_is_still_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, utilisation=None)
    metrics = ServiceMetrics()
    metrics.watch_gpu(torch.device("cuda", 0))
    samples = _gpu_samples(metrics)
    assert "vqa_gpu_utilization_ratio" not in samples
    assert samples["vqa_gpu_memory_used_bytes"][1] == 41 * GIB


def test_a_reload_onto_another_device_moves_the_gpu_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, utilisation=5)
    metrics = ServiceMetrics()
    metrics.watch_gpu(torch.device("cuda", 0))
    metrics.watch_gpu(torch.device("cuda", 1))  # a reloaded model: no duplicate series, no registry error
    assert _gpu_samples(metrics)["vqa_gpu_memory_total_bytes"][0] == {"device": "cuda:1"}
