"""Pack validation: every bad row is reported with file, line and field before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kg.pack import GraphPack, PackError
from tests.conftest import PACK_DIR


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    shutil.copytree(PACK_DIR, target)
    return target


def _append(path: Path, row: dict[str, object]) -> int:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, json.dumps(row)]) + "\n")
    return len(lines) + 1


def test_the_shipped_pack_is_valid() -> None:
    pack = GraphPack.load(PACK_DIR)
    assert pack.meta.name == "fintech" and len(pack.entities) >= 30 and len(pack.relations) >= 40


@pytest.mark.parametrize(
    ("file", "row", "message"),
    [
        ("entities.jsonl", {"id": "fee:card-replacement", "type": "Fee", "name": "dup"}, "id: duplicate"),
        ("entities.jsonl", {"id": "Not An Id", "type": "Fee", "name": "x"}, "id: String should match"),
        ("entities.jsonl", {"id": "fee:x", "type": "Fee", "name": "x", "props": {"id": "y"}}, "reserved"),
        ("entities.jsonl", {"id": "fee:x", "type": "Fee", "name": "x", "colour": "red"}, "colour: Extra inputs"),
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
        GraphPack.load(pack)
    assert f"{file}:{line}: " in str(caught.value) and message in str(caught.value)


def test_broken_json_and_missing_files(tmp_path: Path) -> None:
    pack = _copy(tmp_path)
    (pack / "graph" / "relations.jsonl").write_text('{"source": \n')
    with pytest.raises(PackError, match=r"relations.jsonl:1: "):
        GraphPack.load(pack)
    (pack / "pack.json").unlink()
    with pytest.raises(PackError, match="pack.json"):
        GraphPack.load(pack)
