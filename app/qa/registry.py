"""The model registry: versioned checkpoints under ``models/`` and a file that names the serving one.

``models/registry.json`` (``VQA_MODEL_REGISTRY``) lists registered versions, each an immutable copy of a
checkpoint in ``models/versions/<name>-<version>/`` with the sha256 of its weights, names the version being served,
and keeps the history of registrations, promotions and rollbacks. Writes replace the file atomically under a file
lock, so two CLI calls never interleave and a crashed write leaves the old file.

The registry is optional: without the file the service serves ``VQA_MODEL_PATH`` (default ``models/minilm-squad``),
and the first ``vqa promote`` registers that checkpoint as the first version so ``vqa rollback`` can return to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.qa.card import ModelCard

REGISTRY_FORMAT = 1
# Training leftovers that serving never reads: not copied into a registered version.
_NOT_SERVED = ("trainer_state.pt", "*.pt", "checkpoint-*", "eval-*.json", "eval-*.md", "runs")


class RegistryError(ValueError):
    """The registry or a checkpoint cannot be used as asked; the message says what to do instead."""


def weights_sha256(checkpoint: Path) -> str:
    """sha256 over the checkpoint's weight files (names and bytes), to tell versions apart by content."""
    files = sorted(checkpoint.glob("*.safetensors")) or sorted(checkpoint.glob("*.bin"))
    if not files:
        raise RegistryError(f"{checkpoint}: no weights (*.safetensors) to register")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def version_id(card: ModelCard) -> str:
    """``<name>-<version>`` from the card, reduced to characters safe in a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{card.name}-{card.version}").strip("-.")


@dataclass(frozen=True, slots=True)
class RegisteredVersion:
    id: str
    path: str  # relative to the registry's folder
    name: str
    version: str
    sha256: str
    registered_at: str
    source: str  # where it was copied from


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    at: str
    action: str  # register | promote | rollback
    serving: str
    previous: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ModelRegistry:
    """The parsed ``registry.json``; :meth:`edit` is the only way to change it."""

    path: Path
    serving: str | None = None
    versions: dict[str, RegisteredVersion] = field(default_factory=dict)
    history: list[RegistryEvent] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, path: Path) -> ModelRegistry:
        """Read the registry at ``path``; an absent file is an empty registry."""
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                path=path,
                serving=data.get("serving"),
                versions={k: RegisteredVersion(**v) for k, v in data.get("versions", {}).items()},
                history=[RegistryEvent(**e) for e in data.get("history", [])],
            )
        except (OSError, ValueError, TypeError) as exc:
            raise RegistryError(f"{path}: not a readable model registry: {exc}") from exc

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: Path) -> Iterator[ModelRegistry]:
        """Load under an exclusive lock, let the caller change it, then replace the file atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with (path.parent / ".registry.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            registry = cls.load(path)
            yield registry
            registry._save()

    def _save(self) -> None:
        data = {
            "format": REGISTRY_FORMAT,
            "serving": self.serving,
            "versions": {k: asdict(v) for k, v in self.versions.items()},
            "history": [asdict(e) for e in self.history],
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".registry-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    # ------------------------------------------------------------------ reading
    def checkpoint(self, version: str) -> Path:
        entry = self.versions.get(version)
        if entry is None:
            known = ", ".join(sorted(self.versions)) or "none"
            raise RegistryError(f"version {version!r} is not registered (registered: {known})")
        return self.root / entry.path

    def serving_checkpoint(self) -> Path | None:
        """The folder of the serving version, or None for an empty registry."""
        return self.checkpoint(self.serving) if self.serving else None

    def previous_of(self, version: str) -> str | None:
        """The version served before ``version`` was registered or promoted (what a rollback returns to)."""
        for event in reversed(self.history):
            if event.serving == version and event.action in {"register", "promote"}:
                return event.previous
        return None

    # ------------------------------------------------------------------ changing (inside edit())
    def register(self, checkpoint: Path) -> RegisteredVersion:
        """Copy ``checkpoint`` into ``versions/<name>-<version>`` (once); the same id with other weights is refused."""
        if not (checkpoint / "config.json").is_file():
            raise RegistryError(f"{checkpoint}: not a checkpoint (config.json missing)")
        card = ModelCard.load(checkpoint)
        vid = version_id(card)
        digest = weights_sha256(checkpoint)
        existing = self.versions.get(vid)
        if existing is not None:
            if existing.sha256 != digest:
                raise RegistryError(
                    f"version {vid} is already registered with other weights; give the new checkpoint its own "
                    "version in qa_model.json (vqa train --version, or edit the card) and try again"
                )
            return existing
        target = self.root / "versions" / vid
        staging = self.root / "versions" / f".{vid}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(checkpoint, staging, ignore=shutil.ignore_patterns(*_NOT_SERVED))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        entry = RegisteredVersion(
            id=vid,
            path=str(target.relative_to(self.root)),
            name=card.name,
            version=card.version,
            sha256=digest,
            registered_at=_now(),
            source=str(checkpoint.resolve()),
        )
        self.versions[vid] = entry
        return entry

    def set_serving(self, version: str, action: str, details: dict[str, Any] | None = None) -> RegistryEvent:
        self.checkpoint(version)  # must be registered
        event = RegistryEvent(_now(), action, version, self.serving, details or {})
        self.serving = version
        self.history.append(event)
        return event

    def rollback(self, to: str | None = None) -> RegistryEvent:
        """Serve ``to``, or the version served before the current one was promoted."""
        if self.serving is None:
            raise RegistryError("the registry serves nothing yet: nothing to roll back")
        target = to or self.previous_of(self.serving)
        if target is None:
            raise RegistryError(f"{self.serving} was the first version served: there is no earlier one to return to")
        if target == self.serving:
            raise RegistryError(f"{target} is already serving")
        return self.set_serving(target, "rollback")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def serving_checkpoint(model_path: Path, registry_path: Path | None) -> tuple[Path, str | None]:
    """What to serve: the registry's serving version when the registry names one, else ``model_path``.

    Returns the checkpoint folder and the registry version id (None when it comes from ``model_path``).
    """
    if registry_path is not None:
        registry = ModelRegistry.load(registry_path)
        checkpoint = registry.serving_checkpoint()
        if checkpoint is not None:
            return checkpoint, registry.serving
    return model_path, None
