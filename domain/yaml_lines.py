"""Parse YAML keeping line numbers, so that a validation error can say ``file:line: field: reason``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kg.pack import PackError

M = TypeVar("M", bound=BaseModel)


def parse(text: str, path: Path, first_line: int = 1) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of ``text``; a syntax error raises :class:`PackError` with its line."""
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + first_line if mark is not None else None
        raise PackError(path, line, f"YAML syntax: {getattr(exc, 'problem', exc)}") from exc


def validate(model: type[M], data: Any, root: yaml.Node | None, path: Path, first_line: int = 1) -> M:
    """``model.model_validate(data)``; the first error becomes ``file:line: field: reason``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = line_of(root, loc) + first_line - 1
        raise PackError(path, line, f"{loc_text(loc)}: {err['msg']}") from exc


def loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "file"


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """Line (1-based) of the deepest YAML node on the path ``loc``."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if node is None:
            break
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
