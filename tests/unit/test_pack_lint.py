"""``vqa pack lint``: the shipped pack has no finding; each kind of finding is caught in its own fixture pack and
goes away when the fixture is fixed; numbers written differently compare equal."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from app.cli import main
from domain.lint import lint_pack
from domain.pack import DomainPack
from domain.quantities import find_dates, find_quantities
from tests.conftest import PACK_DIR

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "packs"
TODAY = date(2026, 11, 29)  # the Easy Saver rate changes on 2026-12-01


def _findings(pack_dir: Path, today: date = TODAY) -> list[tuple[str, str, int, str, str]]:
    report = lint_pack(DomainPack.load(pack_dir), today)
    return [(f.kind, f.path.name, f.line, f.entity, f.stated) for f in report.findings]


def _fixture(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.parametrize("today", [TODAY, date(2026, 12, 1), date(2027, 6, 1)])
def test_the_shipped_pack_has_no_finding_before_on_and_after_the_scheduled_change(today: date) -> None:
    report = lint_pack(DomainPack.load(PACK_DIR), today)
    assert [str(f) for f in report.findings] == []
    assert report.checked > 200 and report.examples >= 8, "the lint really compared the corpus with the graph"


def test_graph_mismatch_fixture(tmp_path: Path) -> None:
    pack = _fixture(tmp_path, "graph-mismatch")
    assert _findings(pack) == [
        ("graph-mismatch", "cards.md", 6, "fee:card-replacement", "£6"),
        ("graph-mismatch", "cards.md", 8, "limit:contactless", "£100 per day"),
        ("graph-mismatch", "cards.md", 10, "fee:card-replacement", "free if faulty (and in no other case)"),
        ("graph-mismatch", "protection.md", 6, "regulation:section-75", "£100 as at least"),
    ]
    finding = lint_pack(DomainPack.load(pack), TODAY).findings[0]
    assert "5 GBP" in finding.expected, "the report gives the graph's value next to the stated one"
    _replace(pack / "corpus" / "cards.md", "costs £6", "costs £5")
    _replace(pack / "corpus" / "cards.md", "£100 a day", "£100 per payment")
    _replace(pack / "corpus" / "cards.md", "faulty; otherwise", "faulty or was stolen; otherwise")
    _replace(pack / "corpus" / "protection.md", "between £100 and £30,000", "costing more than £100 and up to £30,000")
    assert _findings(pack) == []


def test_undated_scheduled_change_fixture(tmp_path: Path) -> None:
    pack = _fixture(tmp_path, "undated-change")
    assert _findings(pack) == [
        ("undated-change", "chaps-notice.md", 6, "fee:chaps", "£30 (until 2026-10-31)"),  # not modelled in the graph
        ("undated-change", "saver-terms.md", 6, "rate:saver", "3.1%"),  # states one period's value with no date
    ]
    # the fix: model the CHAPS change with effective dates, and say when the new rate applies
    entities = pack / "graph" / "entities.jsonl"
    rows = [json.loads(line) for line in entities.read_text().splitlines()]
    chaps = next(r for r in rows if r["id"] == "fee:chaps")
    del chaps["props"]["amount"]
    chaps["dated"] = [
        {"valid_to": "2026-10-31", "props": {"amount": 30}},
        {"valid_from": "2026-11-01", "props": {"amount": 25}},
    ]
    entities.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _replace(pack / "corpus" / "saver-terms.md", "3.1% AER,", "3.1% AER from 1 December 2026 (3.25% AER until then),")
    assert _findings(pack) == []
    # once the change has happened, an undated statement of the new rate is simply true
    _replace(pack / "corpus" / "saver-terms.md", " from 1 December 2026 (3.25% AER until then)", "")
    assert _findings(pack, date(2027, 1, 1)) == []


def test_duplicate_disagreement_fixture(tmp_path: Path) -> None:
    pack = _fixture(tmp_path, "duplicate-disagreement")
    report = lint_pack(DomainPack.load(pack), TODAY)
    assert [(f.kind, f.path.name, f.line, f.entity, f.stated) for f in report.findings] == [
        ("duplicate-disagreement", "bond-terms.md", 6, "product:bond", "28 days")
    ]
    assert "bond-faq.md:6 states 30 days" in report.findings[0].expected
    _replace(pack / "corpus" / "bond-terms.md", "28 days", "30 days")
    assert _findings(pack) == []


def test_worked_example_fixture(tmp_path: Path) -> None:
    pack = _fixture(tmp_path, "worked-example")
    report = lint_pack(DomainPack.load(pack), TODAY)
    assert [(f.kind, f.path.name, f.line, f.entity, f.stated) for f in report.findings] == [
        ("worked-example", "overdrafts.md", 13, "rate:overdraft", "£13.90")
    ]
    assert "recomputed 13.99" in report.findings[0].expected
    _replace(pack / "corpus" / "overdrafts.md", "£13.90", "£13.99")
    assert _findings(pack) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a fee of £5", [("money", 5.0, "GBP")]),
        ("a fee of 5 GBP", [("money", 5.0, "GBP")]),
        ("a fee of five pounds", [("money", 5.0, "GBP")]),
        ("£1 million and £25,000.50", [("money", 1_000_000.0, "GBP"), ("money", 25_000.5, "GBP")]),
        ("2.75 euros", [("money", 2.75, "EUR")]),
        ("within 14 days", [("days", 14.0, None)]),
        ("within two weeks", [("days", 14.0, None)]),
        ("within 5 working days", [("working_days", 5.0, None)]),
        ("for 2 years", [("months", 24.0, None)]),
        ("3.1% AER", [("percent", 3.1, None)]),
        ("3.10 per cent", [("percent", 3.1, None)]),
        ("up to 58 days' interest", [("days", 58.0, None)]),
        ("call 0800 123 4567 24/7 before 3pm", []),
    ],
)
def test_numbers_written_differently_normalise_to_one_value(text: str, expected: list[tuple[str, float, str]]) -> None:
    assert [(q.kind, q.value, q.currency) for q in find_quantities(text)] == expected


def test_limits_periods_changes_and_dates_are_read_from_the_wording() -> None:
    more, upto = find_quantities("costing more than £100 and up to £30,000")
    assert (more.bound, upto.bound) == ("min_exclusive", "max")
    low, high = find_quantities("between £100 and £30,000")
    assert (low.bound, high.bound) == ("min", "max")
    assert find_quantities("up to £500 a day")[0].per == "day"
    old, new = find_quantities("the rate changes from 3.25% AER to 3.1% AER")
    assert (old.role, new.role) == ("before", "after")
    markers = find_dates("3.1% from 1 December 2026 (3.25% until then)")
    assert [(m.marker, m.day) for m in markers] == [("from", date(2026, 12, 1)), ("until", date(2026, 11, 30))]


def test_cli_exit_codes_findings_one_broken_pack_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pack", "lint", str(PACK_DIR), "--today", "2026-11-29"]) == 0
    assert main(["pack", "lint", str(FIXTURES / "worked-example"), "--today", "2026-11-29"]) == 1
    out = capsys.readouterr().out
    assert "overdrafts.md:13: worked-example: rate:overdraft: states £13.90" in out
    assert main(["pack", "lint", str(FIXTURES / "worked-example"), "--today", "2026-11-29", "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert findings[0]["line"] == 13 and findings[0]["stated"] == "£13.90"
    broken = _fixture(tmp_path, "worked-example")
    _replace(broken / "graph" / "entities.jsonl", '"type": "Rate"', '"type": "rate"')
    assert main(["pack", "lint", str(broken)]) == 2
    assert "entities.jsonl:1: type: String should match" in capsys.readouterr().err
    assert main(["pack", "check", str(broken)]) == 2
