"""The committed default checkpoint: loads by default, and its accuracy on a small fixed SQuAD dev sample."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.qa.card import ModelCard
from app.qa.reader import Reader
from tests.conftest import DEFAULT_MODEL_DIR as DEFAULT_MODEL_PATH
from tests.conftest import REPO_ROOT
from training.evaluate import evaluate_file

DEV = REPO_ROOT.parent / "shared" / "data" / "squad-v1.1-dev.json.gz"
SAMPLE = 200


def test_the_service_serves_the_committed_checkpoint_by_default() -> None:
    # the default is relative to the working directory (the tests run from the repository root)
    assert Settings().model_path.resolve() == DEFAULT_MODEL_PATH
    card = ModelCard.load(DEFAULT_MODEL_PATH)
    assert (DEFAULT_MODEL_PATH / "model.safetensors").stat().st_size < 60_000_000
    assert card.rebuild_command and card.eval and card.calibration.temperature > 0
    assert card.hyperparameters.get("export_dtype") == "float16"


@pytest.mark.skipif(not DEV.exists(), reason=f"SQuAD dev not found at {DEV} (../shared/data)")
def test_the_reader_reproduces_the_cards_score_on_a_fixed_dev_sample() -> None:
    reader = Reader(DEFAULT_MODEL_PATH, device="cpu")
    reader.load()
    outcome = evaluate_file(reader, DEV, limit=SAMPLE, progress=False)
    card = ModelCard.load(DEFAULT_MODEL_PATH)
    recorded = card.eval[f"squad-v1.1-dev[:{SAMPLE}]"]
    # The card's number came from the same reader code at export time: any change in windowing, decoding or
    # weights that moves it is a regression, not noise (same questions, same deterministic CPU forward).
    assert outcome.exact_match == pytest.approx(recorded.exact_match, abs=0.5)
    assert outcome.f1 == pytest.approx(recorded.f1, abs=0.5)
    assert outcome.f1 > 60, "far above chance"
    assert card.eval["squad-v1.1-dev"].questions == 9380, "the full dev evaluation is recorded too"
