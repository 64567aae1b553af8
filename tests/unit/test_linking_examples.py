"""Labelled example questions in entity linking: a close example overrules the aliases (also "about nothing"), the
fallback picks among the retrieved documents' entities above its threshold, and the pack refuses a bad examples file
with its line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.enrich.linking import LinkingConfig, QuestionLinker
from domain.linking_examples import LinkingExample
from domain.pack import DomainPack
from kg.linker import EntityLinker, EntityRef
from kg.pack import PackError, RelationRow
from tests.conftest import PACK_DIR

MORTGAGE = EntityRef("product:mortgage", "Mortgage", "Product")
ERC = EntityRef("fee:erc", "Early repayment charge", "Fee")
ATM = EntityRef("limit:atm", "Cash withdrawal limit", "Limit")


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _linker(config: LinkingConfig | None = None) -> QuestionLinker:
    lexical = EntityLinker([(MORTGAGE, ["mortgage"]), (ERC, ["early repayment charge"]), (ATM, ["cash machine"])])
    entities = [MORTGAGE, ERC, ATM]
    examples = [
        LinkingExample("can i pay off my mortgage early without a penalty", frozenset({ERC.id})),
        LinkingExample("is my mortgage payment going up because of the news", frozenset()),
        LinkingExample("can i take cash out against my mortgage at a machine", frozenset({MORTGAGE.id, ATM.id})),
    ]
    # Axes: 0 = early repayment, 1 = "about nothing", 2 = cash, 3 = the mortgage product itself, 4 = cash + mortgage.
    entity_vectors = np.stack([_unit(0, 0, 0, 1, 0), _unit(1, 0, 0, 0.2, 0), _unit(0, 0, 1, 0, 0)])
    example_vectors = np.stack([_unit(1, 0, 0, 0, 0), _unit(0, 1, 0, 0, 0), _unit(0, 0, 0, 0, 1)])
    relations = [RelationRow(source=MORTGAGE.id, type="HAS_FEE", target=ERC.id)]
    return QuestionLinker(
        lexical, entities, entity_vectors, None, config or LinkingConfig(), relations, examples, example_vectors
    )


def test_a_question_close_to_a_labelled_example_is_about_what_the_example_is_about() -> None:
    linker = _linker()
    question = "can I pay extra off my mortgage without being charged"
    # Close to the early-repayment example: the aliases' "mortgage" gives way to the example's label.
    mentions = linker.link(question, _unit(1, 0, 0, 0.3, 0))
    assert [(m.entity.id, m.method, m.start, m.end) for m in mentions] == [(ERC.id, "embedding", 0, len(question))]
    # Not close to any example: the aliases decide, with their span.
    far = linker.link(question, _unit(0.3, 0, 0, 1, 0))
    assert [(m.entity.id, question[m.start : m.end]) for m in far] == [(MORTGAGE.id, "mortgage")]


def test_an_example_about_nothing_keeps_a_look_alike_question_unlinked() -> None:
    linker = _linker()
    question = "will my mortgage payment go up because of the news"
    assert [m.entity.id for m in linker.link(question, _unit(0, 0, 0, 1, 0))] == [MORTGAGE.id]
    assert linker.link(question, _unit(0.05, 1, 0, 0.1, 0)) == []


def test_an_entity_the_aliases_also_found_keeps_its_span_and_the_others_span_the_question() -> None:
    question = "can I take cash out against my mortgage"
    vector = _unit(0, 0, 0.2, 0.2, 1)  # close to the example labelled with the mortgage and the cash limit
    mentions = _linker().link(question, vector)
    assert [(m.entity.id, question[m.start : m.end], m.method) for m in mentions] == [
        (ATM.id, question, "embedding"),
        (MORTGAGE.id, "mortgage", "alias"),
    ]
    without = _linker(LinkingConfig(examples=False)).link(question, vector)
    assert [m.entity.id for m in without] == [MORTGAGE.id], "the aliases alone find only the mortgage"


def test_examples_about_unknown_entities_are_dropped_with_their_vectors() -> None:
    lexical = EntityLinker([(ERC, ["early repayment charge"])])
    examples = [
        LinkingExample("what is the tap limit", frozenset({"limit:unknown"})),
        LinkingExample("can i pay off my mortgage early without a penalty", frozenset({ERC.id})),
    ]
    vectors = np.stack([_unit(0, 1), _unit(1, 0)])
    linker = QuestionLinker(lexical, [ERC], None, None, LinkingConfig(), (), examples, vectors)
    assert [m.entity.id for m in linker.link("pay it all off early?", _unit(1, 0.1))] == [ERC.id]
    assert linker.link("tap limit?", _unit(0, 1)) == [], "the unknown example's vector left with it"
    with pytest.raises(ValueError, match="2 example vectors for 1 examples"):
        QuestionLinker(lexical, [ERC], None, None, LinkingConfig(), (), examples[1:], vectors)


def test_without_aliases_the_fallback_picks_among_the_documents_entities_above_its_threshold() -> None:
    linker = _linker(LinkingConfig(embedding_threshold=0.5, example_threshold=0.95))
    question = "how much can i take out of the hole in the wall"
    vector = _unit(0.6, 0, 1, 0, 0)  # cos 0.86 to the cash limit, 0.51 to the early-repayment example
    assert [m.entity.id for m in linker.link(question, vector)] == [ATM.id]
    assert [m.entity.id for m in linker.link(question, vector, document_entities=[ERC.id])] == [ERC.id]
    assert linker.link(question, vector, document_entities=[MORTGAGE.id]) == [], "cos 0 to the mortgage"
    assert linker.link(question, _unit(0, 0, 0.4, -1, 0)) == [], "below the threshold: nothing"
    assert _linker(LinkingConfig(embedding=False)).link(question, vector) == [], "aliases only"


def test_the_shipped_pack_gives_the_linker_its_examples_and_the_catalogues_questions() -> None:
    pack = DomainPack.load(PACK_DIR)
    assert pack.catalogue is not None
    known = {e.id for e in pack.graph.entities}
    examples = pack.linking_examples
    by_question = {e.question.casefold(): e.entities for e in examples}
    assert len(by_question) == len(examples) >= 450, "one example per question"
    assert all(e.entities <= known for e in examples)
    assert any(not e.entities for e in examples), "some examples are about nothing in the graph"
    for fact in pack.catalogue.facts:
        assert all(q.casefold() in by_question for q in fact.questions), fact.id
    # The file's hand label wins over the fact's entity: the notice before a rate cut is asked about the rate.
    assert by_question["how much notice do you give before cutting the savings rate?"] == {"rate:easy-saver-aer"}


def test_one_question_with_two_labels_in_the_examples_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "fintech"
    shutil.copytree(PACK_DIR, root)
    path = root / "graph" / "linking_examples.jsonl"
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"question": "Tap limit?", "entities": ["limit:contactless"]}) + "\n")
        out.write(json.dumps({"question": "tap limit?", "entities": []}) + "\n")
    lines = len(path.read_text(encoding="utf-8").splitlines())
    with pytest.raises(PackError, match=rf":{lines}: entities: \[\] but line {lines - 1} labels the same question"):
        DomainPack.load(root)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "what is the tap limit", "entities": ["limit:nope"]}, "entities: unknown ids ['limit:nope']"),
        ({"question": "", "entities": []}, "question: String should have at least 1 character"),
    ],
)
def test_a_bad_example_is_refused_with_its_file_and_line(tmp_path: Path, row: dict[str, object], message: str) -> None:
    root = tmp_path / "fintech"
    shutil.copytree(PACK_DIR, root)
    path = root / "graph" / "linking_examples.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(2, json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PackError) as caught:
        DomainPack.load(root)
    assert str(caught.value) == f"{path}:3: {message}"


class _CountingEncoder:
    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([self.vector for _ in texts])


def test_without_a_vector_an_aliased_question_is_not_encoded_and_an_unaliased_one_is() -> None:
    linker = _linker()
    encoder = _CountingEncoder(_unit(1, 0, 0, 0, 0))
    linker.encoder = encoder  # type: ignore[assignment]
    assert [m.entity.id for m in linker.link("can I pay extra off my mortgage without being charged")] == [MORTGAGE.id]
    assert encoder.calls == 0, "the aliases decide when there is no vector at hand (the client gave the contexts)"
    assert [m.entity.id for m in linker.link("can I pay extra off without being charged")] == [ERC.id]
    assert encoder.calls == 1
