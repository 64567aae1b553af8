"""Settings: environment overrides, placeholder secrets refused outside development."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VQA_PORT", "9123")
    monkeypatch.setenv("VQA_API_KEYS", "key-one-0123456789, key-two-0123456789")
    settings = Settings()
    assert settings.port == 9123 and settings.host == "127.0.0.1"
    assert settings.api_key_list == ("key-one-0123456789", "key-two-0123456789")
    assert "key-one" not in repr(settings), "secrets never appear in reprs or logs"


def test_placeholder_keys_are_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VQA_ENVIRONMENT", "production")
    monkeypatch.setenv("VQA_API_KEYS", "changeme")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()
    monkeypatch.setenv("VQA_ENVIRONMENT", "development")
    assert Settings().api_key_list == ("changeme",)


def test_paths_default_to_the_working_directory_never_to_the_install_location() -> None:
    import ast

    import app.config

    settings = Settings()
    assert settings.pack == Path("packs/fintech") and settings.model_path == Path("models/minilm-squad")
    assert not settings.pack.is_absolute() and not settings.kg_data_dir.is_absolute()
    source = ast.parse(Path(app.config.__file__).read_text())
    names = {n.id for n in ast.walk(source) if isinstance(n, ast.Name)}
    assert "__file__" not in names, "no default may come from where the package is installed"


def test_one_pack_setting_replaces_the_per_part_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VQA_PACK", "/srv/packs/insurance")
    monkeypatch.setenv("VQA_TODAY", "2026-11-29")
    settings = Settings()
    assert settings.pack == Path("/srv/packs/insurance") and settings.today == date(2026, 11, 29)
    for old in ("rules_path", "corpus_path", "kg_pack"):
        assert old not in Settings.model_fields, f"{old} is part of the pack now"


SECRET_PASSWORD = "graph-pw-TAILSECRET-7c1d"
GOOD_KEY = "good-key-TAILSECRET-0123456789"


@pytest.mark.parametrize(
    ("keys", "password"),
    [
        (f"{GOOD_KEY},short", SECRET_PASSWORD),  # the key check fails: the good key and the password are in the input
        (GOOD_KEY, "TAIL-7"),  # the password check fails (too short)
    ],
)
def test_failed_production_check_echoes_no_secret(monkeypatch: pytest.MonkeyPatch, keys: str, password: str) -> None:
    monkeypatch.setenv("VQA_ENVIRONMENT", "production")
    monkeypatch.setenv("VQA_API_KEYS", keys)
    monkeypatch.setenv("VQA_KG_URI", "bolt://graph.internal:7687")
    monkeypatch.setenv("VQA_KG_PASSWORD", password)
    with pytest.raises(ValidationError) as caught:
        Settings()
    shown = str(caught.value)
    assert "TAIL" not in shown and "7c1d" not in shown and "6789" not in shown, shown
    assert "VQA_" in shown, "the message still says which setting to fix"


def test_vqa_serve_prints_no_secret_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setenv("VQA_ENVIRONMENT", "production")
    monkeypatch.setenv("VQA_API_KEYS", f"{GOOD_KEY},changeme")
    monkeypatch.setenv("VQA_KG_PASSWORD", SECRET_PASSWORD)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "placeholder" in err and "TAILSECRET" not in err, err
