"""The ``vqa`` command: serve the API, train, evaluate, calibrate and export checkpoints."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from app.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config import Settings
    from app.drain import DrainingServer
    from app.http_server import server_options
    from app.log_format import configure_logging
    from app.main import create_app
    from kg.pack import PackError

    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "model_path": args.model, "pack": args.pack}.items()
        if v
    }
    if args.model:  # an explicit checkpoint is served as given, whatever the registry says
        overrides["model_registry"] = None
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        # hide_input_in_errors keeps the given values (secrets among them) out of this message
        print(f"vqa serve: bad settings:\n{exc}", file=sys.stderr)
        return 2
    from app.qa.registry import RegistryError, serving_checkpoint

    try:
        checkpoint, _ = serving_checkpoint(settings.model_path, settings.model_registry)
    except RegistryError as exc:
        print(f"vqa serve: {exc}", file=sys.stderr)
        return 2
    if not (checkpoint / "config.json").is_file():
        print(
            f"vqa serve: no checkpoint at {checkpoint} (config.json missing). "
            "Set VQA_MODEL_PATH or --model to a Hugging Face save_pretrained directory.",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings)
    try:
        app = create_app(settings)
    except PackError as exc:
        print(f"vqa serve: bad domain pack (VQA_PACK={settings.pack}): {exc}", file=sys.stderr)
        return 2
    # SIGTERM drains first (app/drain.py); by the time uvicorn's own shutdown runs, no request is in progress, so
    # its graceful timeout only bounds a request that raced the drain.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        **server_options(settings),
    )
    server = DrainingServer(config, app, grace_s=settings.drain_grace_s)
    server.run()
    return 0 if server.started else 3


def _settings() -> Settings:
    from app.config import Settings

    return Settings()


def _default_pack() -> Path:
    return _settings().pack


def build_parser() -> argparse.ArgumentParser:
    from domain.cli import add_pack_commands
    from kg.cli import add_kg_commands
    from training.cli import add_training_commands
    from training.lifecycle_cli import add_lifecycle_commands

    parser = argparse.ArgumentParser(prog="vqa", description="Vertical QA: extractive question answering service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API",
        description="Serve POST /answer, POST /feedback, /admin/*, /healthz, /readyz, /metrics and /docs. Every "
        "setting can also be given as an environment variable VQA_<NAME> (see app/config.py and the README).",
    )
    serve.add_argument("--host", help="bind address (default 127.0.0.1; VQA_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000; VQA_PORT)")
    serve.add_argument(
        "--model",
        help="serve this checkpoint directory, whatever the model registry says (default: the registry's serving "
        "version, else VQA_MODEL_PATH, models/minilm-squad)",
    )
    serve.add_argument("--pack", help="domain pack folder (default packs/fintech; VQA_PACK)")
    serve.set_defaults(handler=_serve)
    add_training_commands(sub)
    add_lifecycle_commands(sub)
    add_pack_commands(sub, _default_pack)
    add_kg_commands(sub, _settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
