"""The pack's calibration slot: a fit for the served model version replaces the card's temperature and threshold;
a fit for another version is ignored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import PACK_DIR, wait_for_readyz

CONTEXT = "A replacement card costs £5 unless it was stolen."


def _pack_with_fit(tmp_path: Path, version: str, threshold: float, question_only: float | None = None) -> Path:
    pack = tmp_path / "pack"
    shutil.copytree(PACK_DIR, pack)
    fit: dict[str, object] = {
        "model_name": "tiny-test",
        "model_version": version,
        "temperature": 2.0,
        "no_answer_threshold": threshold,
        "fitted_on": "qa/dev.json",
        "questions": 318,
    }
    if question_only is not None:
        fit["question_only_threshold"] = question_only
    (pack / "calibration.json").write_text(json.dumps({"fits": [fit]}))
    return pack


def _threshold_applied(tiny_model_dir: Path, pack: Path) -> float:
    with TestClient(create_app(Settings(model_path=tiny_model_dir, pack=pack))) as client:
        wait_for_readyz(client, 30)
        r = client.post("/answer", json={"question": "How much is a new card?", "contexts": [{"text": CONTEXT}]})
        assert r.status_code == 200, r.text
        data = r.json()
    if data["abstained"]:
        return float(data["abstention"]["threshold"])
    return 0.0  # the tiny card's threshold: nothing is refused


@pytest.mark.parametrize(("version", "expected"), [("t1", 0.999), ("some-other-version", 0.0)])
def test_the_pack_fit_for_the_served_version_decides_abstention(
    tiny_model_dir: Path, tmp_path: Path, version: str, expected: float
) -> None:
    assert _threshold_applied(tiny_model_dir, _pack_with_fit(tmp_path, version, 0.999)) == expected


def test_the_question_only_threshold_applies_to_questions_asked_without_contexts(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pack = _pack_with_fit(tmp_path, "t1", 0.0, question_only=0.999)
    with TestClient(create_app(Settings(model_path=tiny_model_dir, pack=pack))) as client:
        wait_for_readyz(client, 60)
        given = client.post("/answer", json={"question": "How much is a new card?", "contexts": [{"text": CONTEXT}]})
        asked = client.post("/answer", json={"question": "How much does a replacement card cost?"})
    assert given.status_code == asked.status_code == 200, (given.text, asked.text)
    assert not given.json()["abstained"]  # the fit's threshold for given contexts: 0
    refused = asked.json()
    assert refused["retrieved"] and refused["abstained"]
    assert (refused["abstention"]["reason"], refused["abstention"]["threshold"]) == ("low_confidence", 0.999)
