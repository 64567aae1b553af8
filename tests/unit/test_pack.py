"""Graph rows: every bad row is reported with file, line and field; dated facts resolve to the value in force."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from domain.pack import DomainPack
from kg.client import EntityFacts
from kg.linker import EntityRef
from kg.pack import GraphPack, PackError
from kg.timeline import ScheduledChange, encode, in_force
from tests.conftest import PACK_DIR


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    shutil.copytree(PACK_DIR, target)
    return target


def _append(path: Path, row: dict[str, object]) -> int:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, json.dumps(row)]) + "\n")
    return len(lines) + 1


def test_the_shipped_graph_is_valid() -> None:
    graph = DomainPack.load(PACK_DIR).graph
    assert graph.name == "fintech" and len(graph.entities) >= 30 and len(graph.relations) >= 40


@pytest.mark.parametrize(
    ("file", "row", "message"),
    [
        ("entities.jsonl", {"id": "fee:card-replacement", "type": "Fee", "name": "dup"}, "id: duplicate"),
        ("entities.jsonl", {"id": "Not An Id", "type": "Fee", "name": "x"}, "id: String should match"),
        ("entities.jsonl", {"id": "fee:x", "type": "Fee", "name": "x", "props": {"id": "y"}}, "reserved"),
        ("entities.jsonl", {"id": "fee:x", "type": "Fee", "name": "x", "colour": "red"}, "colour: Extra inputs"),
        (
            "entities.jsonl",
            {"id": "fee:x", "type": "Fee", "name": "x", "dated": [{"props": {"amount": 1}}]},
            "give valid_from and/or valid_to",
        ),
        (
            "entities.jsonl",
            {"id": "fee:x", "type": "Fee", "name": "x", "props": {"amount": 1}, "dated": [
                {"valid_from": "2027-01-01", "props": {"amount": 2}}]},  # fmt: skip
            "already undated in props",
        ),
        (
            "relations.jsonl",
            {"source": "fee:card-replacement", "type": "HAS_FEE", "target": "fee:nope"},
            "target: unknown entity",
        ),
        (
            "relations.jsonl",
            {"source": "fee:card-replacement", "type": "X]->(n) DETACH DELETE n //", "target": "fee:chaps-payment"},
            "type: String should match",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, file: str, row: dict[str, object], message: str) -> None:
    pack = _copy(tmp_path)
    line = _append(pack / "graph" / file, row)
    with pytest.raises(PackError) as caught:
        DomainPack.load(pack)
    assert f"{file}:{line}: " in str(caught.value) and message in str(caught.value)


def test_broken_json_and_missing_files(tmp_path: Path) -> None:
    pack = _copy(tmp_path)
    (pack / "graph" / "relations.jsonl").write_text('{"source": \n')
    with pytest.raises(PackError, match=r"relations.jsonl:1: "):
        DomainPack.load(pack)
    (pack / "pack.json").unlink()
    with pytest.raises(PackError, match="pack.json"):
        DomainPack.load(pack)


def _easy_saver_rate() -> dict[str, object]:
    graph = DomainPack.load(PACK_DIR).graph
    entity = graph.entity("rate:easy-saver-aer")
    assert entity is not None
    return dict(encode(entity))


def test_a_scheduled_change_answers_with_the_value_in_force_and_says_when_it_changes() -> None:
    props = _easy_saver_rate()  # as stored on the graph node
    before, changes = in_force(props, date(2026, 11, 29))
    assert before["percent"] == 3.25 and before["basis"] == "AER"
    assert changes == [ScheduledChange("percent", 3.25, 3.1, date(2026, 12, 1))]
    assert not any("__" in key for key in before), "the stored timeline never reaches a reader"
    on_the_day, changes = in_force(props, date(2026, 12, 1))
    assert on_the_day["percent"] == 3.1 and changes == []


def test_entity_facts_from_the_graph_resolve_on_a_day() -> None:
    facts = EntityFacts(EntityRef("rate:easy-saver-aer", "Easy Saver interest rate", "Rate"), _easy_saver_rate())
    today = facts.on(date(2026, 11, 29))
    assert today.props["percent"] == 3.25
    assert [c.as_json() for c in today.changes] == [
        {"property": "percent", "from": 3.25, "to": 3.1, "on": "2026-12-01"}
    ]


def test_a_fact_that_ends_without_a_successor_says_it_stops(tmp_path: Path) -> None:
    entities = tmp_path / "entities.jsonl"
    entities.write_text(
        json.dumps({"id": "fee:promo", "type": "Fee", "name": "Promo", "dated": [
            {"valid_from": "2026-01-01", "valid_to": "2026-12-31", "props": {"amount": 0}}]}) + "\n"  # fmt: skip
    )
    (tmp_path / "relations.jsonl").write_text("")
    graph = GraphPack.read("t", "1", entities, tmp_path / "relations.jsonl")
    props, changes = in_force(dict(encode(graph.entities[0])), date(2026, 12, 1))
    assert props["amount"] == 0 and changes == [ScheduledChange("amount", 0, None, date(2027, 1, 1))]
    props, _ = in_force(dict(encode(graph.entities[0])), date(2027, 1, 1))
    assert "amount" not in props
