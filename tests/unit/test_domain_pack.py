"""The fintech pack as one object: every part loads, a broken part names file:line: field, QA sets are checked whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from domain.pack import DomainPack
from domain.qa import SPLITS, check_qa_file, split_of
from kg.pack import PackError
from tests.conftest import PACK_DIR
from training.domain_qa import build, customer_variant

PACK = DomainPack.load(PACK_DIR)


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "fintech"
    shutil.copytree(PACK_DIR, target)
    return target


def test_the_shipped_pack_loads_every_part() -> None:
    assert (PACK.name, PACK.version) == ("fintech", PACK.manifest.version)
    assert len(PACK.documents) >= 60 and len(PACK.graph.entities) >= 30 and len(PACK.graph.relations) >= 40
    assert PACK.rules is not None and PACK.rules.version and len(PACK.rules.rules) >= 5
    assert PACK.catalogue is not None and len(PACK.catalogue.facts) >= 30
    assert {s.name for s in PACK.manifest.qa.sets} >= {"train", "dev", "test"}
    known = {e.id for e in PACK.graph.entities}
    for doc in PACK.documents:
        assert doc.entities and doc.entities <= known, f"{doc.id} names unknown entities {doc.entities - known}"
        assert len(doc.body.split()) >= 60, f"{doc.id} is too short to be a real page"


def test_document_ids_and_their_split_are_kept() -> None:
    # The split is a hash of the document id: renaming a document would move it between train/dev/test.
    splits = {d.id: split_of(d.id) for d in PACK.documents}
    assert splits["terms-easy-saver"] == "dev" and splits["faq-cards"] == "dev"
    assert splits["chat-transcript-dispute"] == "test" and splits["notice-rate-change-easy-saver"] == "train"
    assert {d.id for d in PACK.documents} >= {"policy-overdrafts", "faq-borrowing", "terms-personal-loan"}


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        ("pack.json", lambda s: s.replace('"version": "', '"versio": "'), r"pack.json: version: Field required"),
        (
            "graph/entities.jsonl",
            lambda s: s + '{"id": "fee:x", "type": "Fee", "name": "X", "props": {"amount": 3, "weight_kg": 2}}\n',
            r"entities.jsonl:\d+: props.weight_kg: a number needs its unit",
        ),
        (
            "graph/entities.jsonl",
            lambda s: s + '{"id": "fee:x", "type": "Fee", "name": "X", "aliases": ["CHAPS fee"]}\n',
            r"entities.jsonl:\d+: aliases: 'CHAPS fee' also names fee:chaps-payment",
        ),
        (
            "graph/entities.jsonl",
            lambda s: s
            + '{"id": "fee:x", "type": "Fee", "name": "X", "dated": [{"valid_to": "2026-12-31", '
            '"props": {"amount": 1}}, {"valid_from": "2026-12-01", "props": {"amount": 2}}]}\n',
            r"entities.jsonl:\d+: dated: amount: periods overlap",
        ),
        (
            "corpus/faq-cards.md",
            lambda s: s.replace("entities: [", "entities: [fee:nope, ", 1),
            r"faq-cards.md:5: entities: unknown ids \['fee:nope'\]",
        ),
        (
            "corpus/faq-cards.md",
            lambda s: s.replace("type: faq\n", "type: faq\ncolour: red\n", 1),
            r"faq-cards.md:5: colour: Extra inputs",
        ),
        (
            "corpus/policy-overdrafts.md",
            lambda s: s.replace('  - text: "if you', '  - text: "when you', 1),
            r"policy-overdrafts.md:\d+: examples\[0\].text: not found in the document body",
        ),
        ("rules.yaml", lambda s: s.replace("action: block", "action: shout", 1), r"rules.yaml:\d+: rules\[0\].action"),
        (
            "calibration.json",
            lambda s: '{"fits": [{"model_name": "m", "model_version": "1", "temperature": 0, '
            '"no_answer_threshold": 0.5, "fitted_on": "qa/dev.json"}]}',
            r"calibration.json: fits.0.temperature: Input should be greater than 0",
        ),
        (
            "qa/facts.yaml",
            lambda s: s.replace("entity: fee:card-replacement", "entity: fee:gone", 1),
            r"facts.yaml:\d+: facts.card-replacement-fee.entity: unknown entity 'fee:gone'",
        ),
    ],
)
def test_a_broken_part_stops_the_load_with_file_line_and_field(tmp_path: Path, file: str, edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    pack = _copy(tmp_path)
    path = pack / file
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(PackError, match=expected):
        DomainPack.load(pack)


def test_every_qa_set_is_checked_span_by_span_and_by_split() -> None:
    counts = PACK.check_qa()
    total_answerable = sum(c["answerable"] for name, c in counts.items() if name in ("train", "dev", "test"))
    total_unanswerable = sum(c["unanswerable"] for name, c in counts.items() if name in ("train", "dev", "test"))
    assert total_answerable >= 1500 and total_unanswerable >= 150
    for name, c in counts.items():
        assert c["documents"] > 0 and c["answerable"] > 0, name
    # the hand-written customer set is checked like the built ones: spans, contexts, dev/test documents only
    customer = counts["customer"]
    assert (customer["documents"], customer["answerable"], customer["unanswerable"]) == (23, 172, 35)


def test_an_unknown_entity_label_in_a_hand_written_set_is_refused(tmp_path: Path) -> None:
    pack = _copy(tmp_path)
    path = pack / "qa" / "customer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    qa = data["data"][0]["paragraphs"][0]["qas"][0]
    qa["entities"] = ["fee:early-repayment"]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(PackError, match=f"{qa['id']}: entities: unknown graph ids"):
        DomainPack.load(pack).check_qa()


def test_committed_built_sets_are_exactly_what_the_builder_makes() -> None:
    rebuilt = build(PACK)
    for split, _ in SPLITS:
        committed = json.loads(PACK.qa_path(split).read_text(encoding="utf-8"))
        assert committed == rebuilt[split], f"qa/{split}.json is stale: run vqa pack build-qa"


def test_a_span_that_does_not_slice_is_refused(tmp_path: Path) -> None:
    data = json.loads(PACK.qa_path("dev").read_text(encoding="utf-8"))
    qa = next(q for q in data["data"][0]["paragraphs"][0]["qas"] if not q["is_impossible"])
    qa["answers"][0]["answer_start"] += 1
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PackError, match=f"{qa['id']}: answers\\[0\\]: context"):
        check_qa_file(path)


def test_a_stale_context_is_refused(tmp_path: Path) -> None:
    pack = _copy(tmp_path)
    doc = pack / "corpus" / "faq-cards.md"
    doc.write_text(doc.read_text().replace("How long does a new card take?", "How long does a card take?"))
    with pytest.raises(PackError, match="faq-cards: context: differs from the document body"):
        DomainPack.load(pack).check_qa()


def test_a_document_in_the_wrong_split_is_refused(tmp_path: Path) -> None:
    pack = _copy(tmp_path)
    train = json.loads((pack / "qa" / "train.json").read_text())
    dev = json.loads((pack / "qa" / "dev.json").read_text())
    dev["data"].append(train["data"][0])
    (pack / "qa" / "dev.json").write_text(json.dumps(dev))
    with pytest.raises(PackError, match=f"{train['data'][0]['title']}: split: the document is in train"):
        DomainPack.load(pack).check_qa()


def test_customer_variants_are_deterministic_and_differ() -> None:
    question = "How much does a replacement card cost?"
    assert customer_variant(question, "seed") == customer_variant(question, "seed")
    variants = {customer_variant(question, f"s{i}") for i in range(20)}
    assert question not in variants and len(variants) > 5


def test_a_new_fit_replaces_the_one_for_the_same_model_version_only(tmp_path: Path) -> None:
    from domain.calibration import CalibrationFit, PackCalibration

    def fit(version: str, threshold: float) -> CalibrationFit:
        return CalibrationFit(
            model_name="m", model_version=version, temperature=0.7, no_answer_threshold=threshold, fitted_on="dev"
        )

    path = tmp_path / "calibration.json"
    PackCalibration().with_fit(fit("1", 0.3)).with_fit(fit("2", 0.4)).save(path)
    PackCalibration.load(path).with_fit(fit("1", 0.5)).save(path)
    loaded = PackCalibration.load(path)
    assert len(loaded.fits) == 2
    assert loaded.for_model("m", "1").no_answer_threshold == 0.5  # type: ignore[union-attr]
    assert loaded.for_model("m", "2").no_answer_threshold == 0.4  # type: ignore[union-attr]
    assert loaded.for_model("m", "3") is None
