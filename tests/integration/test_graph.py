"""The graph layer against a real ArcadeDB server over Bolt (started once per test session)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import date
from pathlib import Path

import pytest
from neo4j import GraphDatabase

from domain.pack import DomainPack
from kg.client import GraphClient
from kg.embedded import EmbeddedGraph
from kg.linker import EntityLinker
from kg.loader import graph_counts, load_pack, loaded_version
from kg.pack import PackError
from tests.conftest import PACK_DIR


def _driver(graph: EmbeddedGraph):  # type: ignore[no-untyped-def]
    return GraphDatabase.driver(graph.uri, auth=(graph.user, graph.password))


def test_server_reports_neo4j_compatibility_and_binds_loopback(embedded_graph: EmbeddedGraph) -> None:
    with _driver(embedded_graph) as driver:
        assert "Neo4j/5" in driver.get_server_info().agent
    assert embedded_graph.uri.startswith("bolt://127.0.0.1:")


def test_loading_twice_gives_the_same_counts(embedded_graph: EmbeddedGraph) -> None:
    pack = DomainPack.load(PACK_DIR).graph
    with _driver(embedded_graph) as driver:
        before = graph_counts(driver, embedded_graph.database)
        again = load_pack(driver, pack, embedded_graph.database)
        after = graph_counts(driver, embedded_graph.database)
    assert before == after == (len(pack.entities), len(pack.relations))
    assert (again.nodes_created, again.relationships_created) == (0, 0)


def test_malformed_pack_writes_nothing(embedded_graph: EmbeddedGraph, tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    shutil.copytree(PACK_DIR, pack_dir)
    entities = pack_dir / "graph" / "entities.jsonl"
    entities.write_text(entities.read_text() + '{"id": "fee:new-one", "type": "Fee", "name": "New"}\n{"id": 7}\n')
    with _driver(embedded_graph) as driver:
        before = graph_counts(driver, embedded_graph.database)
        with pytest.raises(PackError, match=r"entities.jsonl:\d+: id"):
            load_pack(driver, DomainPack.load(pack_dir).graph, embedded_graph.database)
        assert graph_counts(driver, embedded_graph.database) == before


def _client(graph: EmbeddedGraph, **kwargs) -> GraphClient:  # type: ignore[no-untyped-def]
    client = GraphClient(graph.uri, graph.user, graph.password, graph.database, **kwargs)
    client.connect()
    return client


def test_linked_questions_return_their_facts(embedded_graph: EmbeddedGraph) -> None:
    async def scenario():  # type: ignore[no-untyped-def]
        hits: list[int] = []
        client = _client(embedded_graph, on_cache_hit=hits.append)
        try:
            linker = EntityLinker(await client.entity_aliases())
            mentions = linker.link("How much is a replacement card, and what is the contactless limit?")
            ids = [m.entity.id for m in mentions]
            facts = await client.facts_for(ids)
            again = await client.facts_for(ids)
            return ids, facts, again, hits
        finally:
            await client.close()

    ids, facts, again, hits = asyncio.run(scenario())
    assert ids == ["fee:card-replacement", "limit:contactless"]
    by_id = {f.entity.id: f for f in facts}
    assert by_id["fee:card-replacement"].props["amount"] == 5
    assert by_id["limit:contactless"].props["amount"] == 100
    card_fee_rels = {(r.type, r.direction, r.other.id) for r in by_id["fee:card-replacement"].relations}
    assert ("HAS_FEE", "in", "product:visa-debit-card") in card_fee_rels
    assert again == facts and hits == [2], "the second lookup is served from the cache"


def test_relations_per_entity_are_bounded(embedded_graph: EmbeddedGraph) -> None:
    async def scenario():  # type: ignore[no-untyped-def]
        client = _client(embedded_graph, max_relations_per_entity=3)
        try:
            return await client.facts_for(["org:harbour-bank"])
        finally:
            await client.close()

    (bank,) = asyncio.run(scenario())
    assert len(bank.relations) == 3


def test_injection_attempts_in_ids_change_nothing(embedded_graph: EmbeddedGraph) -> None:
    attack = '"}) MATCH (n) DETACH DELETE n //'

    async def scenario():  # type: ignore[no-untyped-def]
        client = _client(embedded_graph)
        try:
            return await client.facts_for([attack, "x' OR 1=1 --"])
        finally:
            await client.close()

    with _driver(embedded_graph) as driver:
        before = graph_counts(driver, embedded_graph.database)
        assert asyncio.run(scenario()) == []
        assert graph_counts(driver, embedded_graph.database) == before


def test_dated_facts_survive_the_graph_and_resolve_on_a_day(embedded_graph: EmbeddedGraph) -> None:
    async def scenario():  # type: ignore[no-untyped-def]
        client = _client(embedded_graph)
        try:
            return await client.facts_for(["rate:easy-saver-aer", "fee:chaps-payment"])
        finally:
            await client.close()

    facts = {f.entity.id: f for f in asyncio.run(scenario())}
    saver = facts["rate:easy-saver-aer"]
    today = saver.on(date(2026, 11, 29))
    assert today.props["percent"] == 3.25 and today.props["basis"] == "AER"
    changes = [c.as_json() for c in today.changes]
    assert changes == [{"property": "percent", "from": 3.25, "to": 3.1, "on": "2026-12-01"}]
    assert saver.on(date(2026, 12, 1)).props["percent"] == 3.1 and saver.on(date(2026, 12, 1)).changes == []
    chaps = facts["fee:chaps-payment"]
    assert chaps.on(date(2026, 10, 31)).props["amount"] == 30 and chaps.on(date(2026, 11, 29)).props["amount"] == 25


def test_vqa_pack_load_is_idempotent_and_refuses_a_broken_pack_before_writing(
    embedded_graph: EmbeddedGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setenv("VQA_KG_PASSWORD", embedded_graph.password)
    target = ["--uri", embedded_graph.uri, "--user", embedded_graph.user, "--database", embedded_graph.database]
    assert main(["pack", "load", str(PACK_DIR), *target]) == 0
    assert "(0 nodes and 0 relationships created by this load)" in capsys.readouterr().out
    broken = tmp_path / "pack"
    shutil.copytree(PACK_DIR, broken)
    (broken / "corpus" / "faq-cards.md").write_text("no front matter\n")
    assert main(["pack", "load", str(broken), *target]) == 2
    assert "faq-cards.md:1: front matter: missing" in capsys.readouterr().err


def test_a_load_replaces_what_an_older_pack_version_left_behind(embedded_graph: EmbeddedGraph, tmp_path: Path) -> None:
    older = tmp_path / "older"
    shutil.copytree(PACK_DIR, older)
    entities = older / "graph" / "entities.jsonl"
    text = entities.read_text().replace('"props": {"amount": 5, ', '"props": {"amount": 5, "legacy_note": "old", ', 1)
    old_row = '{"id": "fee:early-repayment", "type": "Fee", "name": "Old", "aliases": ["old alias"]}\n'
    entities.write_text(text + old_row)
    relations = older / "graph" / "relations.jsonl"
    relations.write_text(
        relations.read_text() + '{"source": "fee:early-repayment", "type": "HAS_FEE", "target": "fee:chaps-payment"}\n'
        '{"source": "fee:card-replacement", "type": "LEGACY", "target": "fee:chaps-payment"}\n'
    )
    current = DomainPack.load(PACK_DIR).graph
    with _driver(embedded_graph) as driver:
        load_pack(driver, DomainPack.load(older).graph, embedded_graph.database)
        assert graph_counts(driver, embedded_graph.database) == (len(current.entities) + 1, len(current.relations) + 2)
        load_pack(driver, current, embedded_graph.database)
        assert graph_counts(driver, embedded_graph.database) == (len(current.entities), len(current.relations))
        with driver.session(database=embedded_graph.database) as session:
            props = session.run("MATCH (e:Entity {id: 'fee:card-replacement'}) RETURN properties(e) AS p").single()
        assert props is not None and "legacy_note" not in props["p"]
        assert loaded_version(driver, embedded_graph.database, "fintech") == current.version
