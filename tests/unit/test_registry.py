"""The model registry: immutable registered copies, the serving pointer, promotion history and rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.qa.card import ModelCard
from app.qa.registry import ModelRegistry, RegistryError, serving_checkpoint


def checkpoint(root: Path, name: str, version: str, weights: bytes) -> Path:
    folder = root / f"{name}-{version}-src"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "trainer_state.pt").write_bytes(b"optimizer state, never served")
    ModelCard(name=name, version=version).save(folder)
    return folder


def test_registering_copies_the_served_files_once_and_refuses_a_reused_version(tmp_path: Path) -> None:
    registry_file = tmp_path / "models" / "registry.json"
    a = checkpoint(tmp_path, "minilm", "1", b"weights-a")
    with ModelRegistry.edit(registry_file) as registry:
        entry = registry.register(a)
        assert registry.register(a) == entry, "the same checkpoint again is the same version"
        registry.set_serving(entry.id, "register")
    copied = registry_file.parent / "versions" / "minilm-1"
    assert (copied / "model.safetensors").read_bytes() == b"weights-a"
    assert not (copied / "trainer_state.pt").exists(), "training state is not part of a served version"
    (a / "model.safetensors").write_bytes(b"changed in place")  # e.g. the default folder replaced by a new run
    assert (copied / "model.safetensors").read_bytes() == b"weights-a", "registered versions are immutable"
    with pytest.raises(RegistryError, match="own version"), ModelRegistry.edit(registry_file) as registry:
        registry.register(a)
    assert json.loads(registry_file.read_text())["serving"] == "minilm-1"


def test_rollback_walks_back_through_promotions(tmp_path: Path) -> None:
    registry_file = tmp_path / "registry.json"
    ids = []
    with ModelRegistry.edit(registry_file) as registry:
        for version, weights in (("1", b"a"), ("2", b"b"), ("3", b"c")):
            entry = registry.register(checkpoint(tmp_path, "m", version, weights))
            registry.set_serving(entry.id, "register" if version == "1" else "promote")
            ids.append(entry.id)
    with ModelRegistry.edit(registry_file) as registry:
        assert registry.rollback().serving == "m-2"
    with ModelRegistry.edit(registry_file) as registry:
        assert registry.rollback().serving == "m-1"
    with pytest.raises(RegistryError, match="first version"), ModelRegistry.edit(registry_file) as registry:
        registry.rollback()
    with ModelRegistry.edit(registry_file) as registry:
        registry.rollback(to="m-3")
    reloaded = ModelRegistry.load(registry_file)
    assert reloaded.serving == "m-3"
    actions = [e.action for e in reloaded.history]
    assert actions == ["register", "promote", "promote", "rollback", "rollback", "rollback"]


def test_the_service_serves_the_registry_version_else_its_configured_path(tmp_path: Path) -> None:
    default = checkpoint(tmp_path, "default", "0", b"d")
    registry_file = tmp_path / "models" / "registry.json"
    assert serving_checkpoint(default, registry_file) == (default, None), "no registry file: the configured path"
    with ModelRegistry.edit(registry_file) as registry:
        registry.set_serving(registry.register(checkpoint(tmp_path, "m", "7", b"x")).id, "register")
    path, version = serving_checkpoint(default, registry_file)
    assert version == "m-7" and path == registry_file.parent / "versions" / "m-7"
    assert serving_checkpoint(default, None) == (default, None), "registry turned off (vqa serve --model)"
    with pytest.raises(RegistryError, match="not registered"):
        ModelRegistry.load(registry_file).checkpoint("m-8")
