"""Every Prometheus metric of the service, defined once.

Each app instance gets its own registry so that several apps in one process (tests) never share counts.
Names follow Prometheus' guide: prefix ``vqa_``, base units, ``_total`` on counters, explicit histogram buckets,
no high-cardinality labels (no question text, no ids).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
RATING_BUCKETS = (1, 2, 3, 4, 5)

class ServiceMetrics:
    """The service's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
