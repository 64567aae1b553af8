"""Every `vqa` command's --help renders: argparse formats help strings with %, so a stray one breaks only --help."""

from __future__ import annotations

import argparse

from app.cli import build_parser


def _all_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _all_parsers(sub, (*path, name))
    return found


def test_every_command_formats_its_help() -> None:
    root = build_parser()
    commands = _all_parsers(root)
    assert ("calibrate",) in commands and ("pack", "lint") in commands, commands
    for command in commands:
        parser = root
        for name in command:
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[name]
        assert parser.format_help().startswith("usage:"), command
