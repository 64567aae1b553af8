"""Rule checks: each action, the graph-contradiction check, PII detectors, and broken rules files."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import get_args

import pytest

from app.enrich.graph import Enrichment
from app.enrich.pii import DETECTORS, find_pii, redact
from app.enrich.pipeline import check_answer
from app.enrich.rules import RuleSet, numbers_of_kind
from app.qa.abstention import AbstentionReason
from app.qa.reader import ReaderResult, SpanAnswer
from domain.pack import DomainPack
from domain.rules import PiiKind
from kg.client import EntityFacts
from kg.linker import EntityMention, EntityRef
from kg.pack import PackError
from kg.timeline import encode
from tests.conftest import PACK_DIR

RULES = RuleSet.load(PACK_DIR / "rules.yaml")
FEE = EntityRef("fee:card-replacement", "Card replacement fee", "Fee")


def _result(text: str, score: float = 0.9, context: str | None = None) -> ReaderResult:
    ctx = context or f"prefix {text} suffix"
    start = ctx.index(text)
    return ReaderResult([SpanAnswer(text, score, start, start + len(text), 0)], False, None, score, 0.01)


def _graph(amount: float = 5) -> Enrichment:
    return Enrichment(
        "ok",
        [("question", EntityMention(FEE, "card replacement", 12, 28))],
        [EntityFacts(FEE, {"amount": amount, "currency": "GBP"}, [])],
    )


def _actions(checked) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {o.rule_id: o.action for o in checked.outcomes}


def test_investment_question_gets_the_disclaimer() -> None:
    checked = check_answer(RULES, "Should I invest my savings in bitcoin?", _result("the Easy Saver"), Enrichment("ok"))
    assert _actions(checked) == {"investment-tax-legal-disclaimer": "append_disclaimer"}
    assert "not investment, tax or legal advice" in checked.outcomes[0].message
    assert not checked.abstained and checked.answers


def test_card_number_in_the_answer_is_redacted() -> None:
    checked = check_answer(RULES, "what card did I use?", _result("4111 1111 1111 1111"), Enrichment("ok"))
    assert _actions(checked) == {"redact-payment-identifiers": "redact"}
    assert checked.answers[0].text == "•••• •••• •••• 1111" and checked.redacted == [True]
    assert "card_number" in checked.outcomes[0].message


def test_card_number_only_in_the_question_is_reported_without_touching_the_answer() -> None:
    checked = check_answer(RULES, "is GB82 WEST 1234 5698 7654 32 my IBAN?", _result("yes"), Enrichment("ok"))
    assert _actions(checked) == {"redact-payment-identifiers": "redact"}
    assert checked.answers[0].text == "yes" and checked.redacted == [False]


def test_fee_that_contradicts_the_graph_is_flagged_with_the_graph_value() -> None:
    checked = check_answer(RULES, "How much is a card replacement?", _result("£10"), _graph(5))
    assert _actions(checked) == {"number-contradicts-graph": "flag"}
    assert "10" in checked.outcomes[0].message and "5 GBP" in checked.outcomes[0].message
    agreeing = check_answer(RULES, "How much is a card replacement?", _result("£5"), _graph(5))
    assert agreeing.outcomes == [], "an answer that agrees with the graph is not flagged"
    no_graph = check_answer(RULES, "How much is a card replacement?", _result("£10"), Enrichment("unavailable"))
    assert no_graph.outcomes == [], "nothing to compare without graph facts"


def test_low_confidence_on_a_regulated_topic_escalates() -> None:
    checked = check_answer(RULES, "How much is a card replacement?", _result("£5", score=0.1), _graph(5))
    assert _actions(checked) == {"low-confidence-regulated-topic": "escalate"}
    confident = check_answer(RULES, "How much is a card replacement?", _result("£5", score=0.9), _graph(5))
    assert confident.outcomes == []


def test_blocked_topic_removes_the_answer() -> None:
    checked = check_answer(RULES, "How can I launder money through my account?", _result("cash"), Enrichment("ok"))
    assert _actions(checked)["blocked-financial-crime"] == "block"
    assert checked.abstained and checked.answers == []
    assert checked.abstain_reason is AbstentionReason.BLOCKED
    assert checked.abstain_detail.startswith("blocked-financial-crime: ")


def test_ordinary_numbers_are_not_payment_data() -> None:
    text = "Call 0800 123 4567 on 12/03/2026; the fee is £1,234,567.89 and 1234 5678 9012 3456 fails Luhn."
    assert find_pii(text, ["card_number", "iban", "account_number"]) == []
    sort_code = "Pay 12-34-56 account 12345678 today"
    assert [m.kind for m in find_pii(sort_code, ["account_number"])] == ["account_number"]
    assert redact(sort_code, find_pii(sort_code, ["account_number"])) == "Pay ••-••-•• ••••••• ••••5678 today"


def test_numbers_by_kind() -> None:
    assert numbers_of_kind("£5.50, 1,000 pounds, EUR 3", "money") == [5.5, 1000.0, 3.0]
    assert numbers_of_kind("2.75% and 3 per cent", "percent") == [2.75, 3.0]
    assert numbers_of_kind("within 120 working days or 8 weeks", "days") == [120.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nrules:\n  - id: ok-rule\n    action: shout\n    message: m\n    when: {}\n",
            r"rules.yaml:4: rules\[0\].action: Input should be",
        ),
        (
            "version: 1\nrules:\n  - id: r1\n    action: flag\n    message: m\n    when:\n"
            "      question_matches: ['(']\n",
            r"rules.yaml:7: rules\[0\].when.question_matches: Value error, bad regular expression",
        ),
        (
            "version: 1\nrules:\n  - id: r1\n    action: flag\n    message: m\n    when: {}\n"
            "  - id: r1\n    action: flag\n    message: m\n    when: {}\n",
            r"rules.yaml:7: rules\[1\].id: duplicate",
        ),
        (
            "version: 1\nrules:\n  - id: r1\n    action: flag\n    message: m\n    when:\n      colour: red\n",
            r"rules.yaml:7: rules\[0\].when.colour: Extra inputs",
        ),
        ("version: 1\nrules: [\n", r"rules.yaml:\d+: YAML syntax"),
    ],
)
def test_broken_rules_file_names_file_line_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(PackError, match=expected):
        RuleSet.load(path)


def test_broken_rules_file_stops_the_service_start(tmp_path: Path) -> None:
    from app.config import Settings
    from app.main import create_app

    pack = tmp_path / "pack"
    shutil.copytree(PACK_DIR, pack)
    (pack / "rules.yaml").write_text("version: 1\nrules:\n  - id: x\n")
    with pytest.raises(PackError, match="rules.yaml:3"):
        create_app(Settings(pack=pack))


def test_the_rule_schema_knows_exactly_the_services_pii_detectors() -> None:
    assert set(get_args(PiiKind)) == set(DETECTORS)


RATE = EntityRef("rate:easy-saver-aer", "Easy Saver interest rate", "Rate")


def _easy_saver(day: date) -> Enrichment:
    entity = DomainPack.load(PACK_DIR).graph.entity(RATE.id)
    assert entity is not None
    facts = EntityFacts(RATE, dict(encode(entity)), []).on(day)
    return Enrichment("ok", [("question", EntityMention(RATE, "easy saver rate", 9, 24))], [facts])


def test_a_scheduled_change_is_announced_and_a_number_is_checked_against_the_value_in_force() -> None:
    today = date(2026, 11, 29)
    checked = check_answer(RULES, "What's the easy saver rate?", _result("3.25% AER"), _easy_saver(today), today)
    assert [(o.rule_id, o.message) for o in checked.outcomes] == [
        ("scheduled-change", "Easy Saver interest rate: percent is 3.25 today and changes to 3.1 on 2026-12-01.")
    ]
    early = check_answer(RULES, "What's the easy saver rate?", _result("3.1% AER"), _easy_saver(today), today)
    flagged = next(o for o in early.outcomes if o.rule_id == "number-contradicts-graph")
    assert "percent = 3.25% (3.1% from 2026-12-01)" in flagged.message, "the flag says when 3.1% becomes right"
    after = date(2026, 12, 2)
    settled = check_answer(RULES, "What's the easy saver rate?", _result("3.1% AER"), _easy_saver(after), after)
    assert settled.outcomes == [], "after the change the new rate is the value in force, and nothing is pending"
