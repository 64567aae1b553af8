"""Settings: environment overrides, placeholder secrets refused outside development."""

from __future__ import annotations

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
