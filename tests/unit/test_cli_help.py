"""Every `vqa` command's --help renders: argparse formats help strings with %, so a stray one breaks only --help."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from app.cli import build_parser


def _all_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_every_command_formats_its_help() -> None:
    parsers = dict(_all_parsers(build_parser()))
    assert ("calibrate",) in parsers and ("pack", "lint") in parsers, sorted(parsers)
    for command, parser in parsers.items():
        assert parser.format_help().startswith("usage:"), command
