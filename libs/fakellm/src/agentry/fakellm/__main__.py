"""`python -m agentry.fakellm`: serve the scripted models over HTTP."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app
from .script import load_scripts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentry.fakellm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--tps", type=float, default=None, help="tokens per second (default: no pacing)")
    parser.add_argument("--scripts", default=None, help='JSON file: {"model-name": [turns...]}')
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse, with the provider's 400 body, any history OpenAI or Anthropic would refuse",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    scripts = load_scripts(args.scripts) if args.scripts else None
    app = create_app(scripts, ttft_seconds=args.ttft, tokens_per_second=args.tps, strict=args.strict)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
