"""``zsgen serve --config serve.toml``: the recommender as an HTTP service (FastAPI on uvicorn).

Needs the ``zsgen[serve]`` extra. The config is read and the models are loaded before the port opens, so a bad
config, a missing dataset or an unreachable model folder is one ``zsgen: error:`` line and exit status 1, not a
server that starts and then fails its requests.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from zsgen.errors import ConfigError

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers

logger = logging.getLogger("zsgen")


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``serve``."""
    p = subparsers.add_parser(
        "serve",
        help="serve recommendations over HTTP (FastAPI; pip install 'zsgen[serve]')",
        description="Serve one catalog over HTTP: POST /v1/recommendations (and :batch), PUT/DELETE /v1/items/{id}, "
        "GET /healthz, /readyz, /docs, and /playground with a [playground] table. Everything is set in the TOML "
        "config (see README, Serving); the bearer token "
        "comes from the environment variable the config names (default ZSGEN_SERVE_TOKEN).",
    )
    p.add_argument("--config", type=Path, required=True, help="serve.toml")
    p.add_argument("--host", help="interface to listen on (default: the config's host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: the config's port, 8080; 0 picks a free one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config and the models, then serve until interrupted."""
    try:
        import uvicorn

        from zsgen.serve.app import create_app
    except ImportError as exc:
        raise ConfigError(f"zsgen serve needs FastAPI and uvicorn: pip install 'zsgen[serve]' ({exc})") from None
    from zsgen.serve.auth import Token
    from zsgen.serve.config import load_serve_config
    from zsgen.serve.hosts import is_loopback
    from zsgen.serve.service import build_state

    config = load_serve_config(args.config)
    host = args.host or config.host
    port = config.port if args.port is None else args.port
    config = config.model_copy(update={"host": host})  # the Host check answers to the interface actually used
    token = Token.from_env(config.token_env)
    if not token.required:
        if not is_loopback(host) and not config.allow_public_without_token:
            raise ConfigError(
                f"refusing to listen on {host} without a bearer token: set ${config.token_env}, listen on "
                "127.0.0.1, or set allow_public_without_token = true in the config"
            )
        logger.warning(
            "no bearer token ($%s is unset): anyone who can reach %s may call the API", config.token_env, host
        )
    state = build_state(config)
    if state.token.required:
        logger.info("bearer token required (from $%s)", config.token_env)
    app = create_app(config, state=state)
    if config.playground is not None and config.playground.enabled:
        logger.info("prompt playground: http://%s:%d/playground", host, port)
    level = "warning" if args.verbosity < 0 else ("debug" if args.verbosity > 1 else "info")
    uvicorn.run(app, host=host, port=port, log_level=level)
    return 0
