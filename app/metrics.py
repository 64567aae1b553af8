"""Every Prometheus metric of the service, defined once.

Each app instance gets its own registry so that several apps in one process (tests) never share counts.
Names follow Prometheus' guide: prefix ``vqa_``, base units, ``_total`` on counters, explicit histogram buckets,
no high-cardinality labels (no question text, no ids). The machine is watched too: CPU and memory of the service
(``vqa_process_*``) and of the embedded graph server (``vqa_kg_process_*``), and the GPU when the model runs on one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
RATING_BUCKETS = (1, 2, 3, 4, 5)

class ServiceMetrics:
    """The service's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # A `_created` series per counter and histogram doubles the series count and no query here uses one.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(namespace="vqa", registry=r)
        # The graph server's pid changes with every restart; set by the graph supervisor, None while there is none.
        self.kg_process_pid: Callable[[], int | None] = lambda: None
        # ProcessCollector reads /proc/<pid>/...: a pid path that does not exist yields no samples.
        ProcessCollector(namespace="vqa_kg", pid=lambda: str(self.kg_process_pid() or "no-graph-process"), registry=r)
        self._gpu: GpuCollector | None = None
        self.requests = Counter(
            "vqa_requests", "HTTP requests by route template and status code.", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "vqa_request_duration_seconds",
            "Wall time of an HTTP request, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("vqa_queue_depth", "Windows waiting for a batch.", registry=r)
        self.batch_windows = Histogram(
            "vqa_batch_windows", "Windows per batch run by the model.", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_duration = Histogram(
            "vqa_inference_duration_seconds",
            "Model time of one batch (forward pass and span decoding).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "vqa_queue_wait_seconds",
            "Time a request waited before its first batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.abstentions = Counter("vqa_abstentions", "Answers withheld, by reason class.", ["reason"], registry=r)
        self.answer_score = Histogram(
            "vqa_answer_score", "Score of the best span of answered questions.", buckets=SCORE_BUCKETS, registry=r
        )
        self.rejections = Counter(
            "vqa_rejections",
            "Requests refused before the model: queue full, deadline, too large.",
            ["reason"],
            registry=r,
        )
        self.model_info = Info("vqa_model", "The loaded checkpoint.", registry=r)
        self.model_eval_f1 = Gauge(
            "vqa_model_eval_f1", "SQuAD F1 (0-100) of the loaded checkpoint, from its card.", ["dataset"], registry=r
        )
        self.model_eval_em = Gauge(
            "vqa_model_eval_exact_match",
            "SQuAD exact match (0-100) of the loaded checkpoint, from its card.",
            ["dataset"],
            registry=r,
        )
        self.model_loaded = Gauge("vqa_model_loaded", "1 once the model is loaded and warmed up.", registry=r)
        self.model_load_seconds = Gauge("vqa_model_load_seconds", "Time to load and warm the model.", registry=r)
        self.rule_hits = Counter(
            "vqa_rule_hits", "Rule checks that fired, by rule and action.", ["rule_id", "action"], registry=r
        )
        self.kg_lookup_duration = Histogram(
            "vqa_kg_lookup_duration_seconds",
            "Round trip of one graph facts lookup (cache misses only).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.kg_cache_hits = Counter("vqa_kg_cache_hits", "Entity facts served from the cache.", registry=r)
        self.kg_errors = Counter("vqa_kg_errors", "Failed graph reads, by error kind.", ["kind"], registry=r)
        self.kg_up = Gauge("vqa_kg_up", "1 while the graph answers, 0 while it is unavailable.", registry=r)
        # The feedback loop: verdicts on answers, live accuracy, canary scores, model reloads.
        self.feedback = Counter(
            "vqa_feedback", "Verdicts received on answers.", ["verdict", "model_version"], registry=r
        )
        self.feedback_rating = Histogram(
            "vqa_feedback_rating",
            "Ratings (1-5) sent with feedback.",
            ["model_version"],
            buckets=RATING_BUCKETS,
            registry=r,
        )
        self.live_accuracy = Gauge(
            "vqa_live_accuracy",
            "Share of correct answers (partially correct counts half) over the newest verdicts, from the store.",
            ["model_version"],
            registry=r,
        )
        self.live_accuracy_samples = Gauge(
            "vqa_live_accuracy_samples", "Verdicts behind vqa_live_accuracy.", ["model_version"], registry=r
        )
        self.answer_records_dropped = Counter(
            "vqa_answer_records_dropped",
            "Answered requests not stored for feedback (store down or queue full).",
            registry=r,
        )
        self.store_errors = Counter("vqa_store_errors", "Failed feedback-store operations.", ["operation"], registry=r)
        self.canary_f1 = Gauge(
            "vqa_canary_f1",
            "SQuAD v2 F1 (0-100, abstentions count) of the canary set answered through the serving path.",
            ["model_version", "set"],
            registry=r,
        )
        self.canary_exact_match = Gauge(
            "vqa_canary_exact_match", "Exact match (0-100) of the canary set.", ["model_version", "set"], registry=r
        )
        self.canary_runs = Counter("vqa_canary_runs", "Canary runs by outcome (ok, failed).", ["outcome"], registry=r)
        self.canary_last_run = Gauge(
            "vqa_canary_last_run_timestamp_seconds", "Unix time of the last finished canary run.", registry=r
        )
        self.model_reloads = Counter(
            "vqa_model_reloads", "Model reloads by outcome (ok, failed).", ["outcome"], registry=r
        )
        self.kg_restarts = Counter(
            "vqa_kg_restarts", "Restarts of the embedded graph server (after it exited or froze).", registry=r
        )

    def watch_gpu(self, device: torch.device) -> None:
        """Export memory and utilisation of the GPU the model runs on (again after a reload: the newest device)."""
        if self._gpu is None:
            self._gpu = GpuCollector(device)
            self.registry.register(self._gpu)
        else:
            self._gpu.watch(device)


class GpuCollector(Collector):
    """Memory (device-wide and this process's tensors) and utilisation of one CUDA device, read at scrape time.

    Utilisation comes from NVML through torch; without the NVML bindings (nvidia-ml-py) it is left out.
    """

    def __init__(self, device: torch.device) -> None:
        self.watch(device)

    def watch(self, device: torch.device) -> None:
        self.device = device
        self.label = str(device if device.index is not None else torch.device("cuda", torch.cuda.current_device()))

    def collect(self) -> Iterable[Metric]:
        labels = ["device"]
        free, total = torch.cuda.mem_get_info(self.device)
        used = GaugeMetricFamily("vqa_gpu_memory_used_bytes", "GPU memory in use, all processes.", labels=labels)
        used.add_metric([self.label], float(total - free))
        size = GaugeMetricFamily("vqa_gpu_memory_total_bytes", "GPU memory in total.", labels=labels)
        size.add_metric([self.label], float(total))
        ours = GaugeMetricFamily(
            "vqa_gpu_memory_allocated_bytes", "GPU memory held by this process's tensors.", labels=labels
        )
        ours.add_metric([self.label], float(torch.cuda.memory_allocated(self.device)))
        families: list[Metric] = [used, size, ours]
        try:
            busy = torch.cuda.utilization(self.device)
        except Exception as exc:  # NVML missing or refusing: memory still tells most of the story
            log.debug("GPU utilisation unavailable: %s", exc)
        else:
            utilisation = GaugeMetricFamily(
                "vqa_gpu_utilization_ratio", "Share of the last sample period the GPU was busy (0-1).", labels=labels
            )
            utilisation.add_metric([self.label], busy / 100.0)
            families.append(utilisation)
        return families
