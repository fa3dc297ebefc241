"""`dotocr-serve`, the console script: flags first, the heavy imports only once they are known to be good.

Binds 127.0.0.1 unless told otherwise; any other address needs an API token. `--help` and `--version` answer
without importing the web framework or the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from dotocr.config import SettingsFile, add_engine_arguments, port_number, settings_from_args
from dotocr.loopback import LOOPBACK_ADDRESS, is_loopback_host
from dotocr.version import VersionAction

TOKEN_ENV = "DOTOCR_API_TOKEN"
MIB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    from .limits import ServerLimits

    defaults = ServerLimits()
    parser = argparse.ArgumentParser(
        prog="dotocr-serve", description="Serve the dots.ocr model over HTTP: POST /ocr (multipart upload) "
        "and an OpenAI-compatible /v1/chat/completions.")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--host", default=LOOPBACK_ADDRESS,
                        help="address to listen on (default 127.0.0.1: this machine only; anything else "
                        "needs --api-token)")
    parser.add_argument("--port", type=port_number, help="port (default: api_port from the settings file, 8765)")
    parser.add_argument("--api-token", default=os.environ.get(TOKEN_ENV) or None,
                        help="require 'Authorization: Bearer TOKEN' on every route but /health "
                        f"(or set {TOKEN_ENV})")
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_bytes / MIB, metavar="MB",
                        help="largest image accepted (default %(default)g)")
    parser.add_argument("--max-waiting", type=int, default=defaults.max_waiting, metavar="N",
                        help="requests that may wait behind the running one before 503 (default %(default)d)")
    parser.add_argument("--request-timeout", type=float, default=defaults.request_timeout_s, metavar="S",
                        help="seconds before a request gets 504 and its generation stops "
                        "(default %(default)g)")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections, metavar="N",
                        help="open connections at most; a new one pushes out the oldest idle one "
                        "(default %(default)d, lowered to fit the open-file limit)")
    parser.add_argument("--header-timeout", type=float, default=defaults.header_timeout_s, metavar="S",
                        help="seconds a connection has to send a request's headers (default %(default)g)")
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout_s, metavar="S",
                        help="seconds a request body may take in all (default %(default)g)")
    parser.add_argument("--max-image-memory-mb", type=float, default=defaults.max_decoded_bytes / MIB,
                        metavar="MB", help="memory for the decoded images of all requests in flight "
                        "(default %(default)g)")
    parser.add_argument("--max-prompt-tokens", type=int, default=defaults.max_prompt_tokens, metavar="N",
                        help="tokens a chat request's text may take (default %(default)d)")
    parser.add_argument("--docs", action="store_true",
                        help="serve the interactive API page at /docs (its scripts load from a CDN)")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))
    add_engine_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from dotocr.engine import make_engine

    from .app import create_app
    from .limits import ServerLimits
    from .serving import ServerStartError, bind_socket, make_server, serve

    _show_engine_log(args.log_level)
    if not is_loopback_host(args.host) and not args.api_token:
        parser.error(f"--host {args.host} makes the model reachable from the network; give --api-token TOKEN "
                     f"(or set {TOKEN_ENV}) so only clients with the token can use it.")
    if min(args.max_upload_mb, args.request_timeout, args.max_connections, args.header_timeout,
           args.body_timeout, args.max_image_memory_mb, args.max_prompt_tokens) <= 0 or args.max_waiting < 0:
        parser.error("--max-upload-mb, --request-timeout, --max-connections, --header-timeout, --body-timeout, "
                     "--max-image-memory-mb and --max-prompt-tokens must be positive, --max-waiting 0 or more.")
    settings_file = SettingsFile()
    settings = settings_from_args(args, settings_file.load(), settings_file.problems)
    for problem in settings_file.problems:
        print(f"dotocr-serve: {problem}", file=sys.stderr)
    port = args.port if args.port is not None else settings.api_port
    limits = ServerLimits(max_upload_bytes=int(args.max_upload_mb * MIB), max_waiting=args.max_waiting,
                          request_timeout_s=args.request_timeout, max_connections=args.max_connections,
                          header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                          max_decoded_bytes=max(1, int(args.max_image_memory_mb * MIB)),
                          max_prompt_tokens=args.max_prompt_tokens)
    try:
        sock = bind_socket(args.host, port)
    except ServerStartError as exc:
        print(f"dotocr-serve: {exc}", file=sys.stderr)
        return 1
    app = create_app(make_engine(settings), api_token=args.api_token, limits=limits, host=args.host,
                     docs=args.docs)
    where = f"http://{args.host}:{sock.getsockname()[1]}"
    if is_loopback_host(args.host):
        print(f"dotocr-serve: serving {settings.model} on {where} (this machine only); the model loads "
              "in the background.", file=sys.stderr)
    else:
        print(f"dotocr-serve: serving {settings.model} on {where}, reachable from the network; every "
              "route but /health needs 'Authorization: Bearer <token>'.", file=sys.stderr)
    server = make_server(app, limits=limits, log_level=args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(server, sock))
    return 0


def _show_engine_log(level: str) -> None:
    """The engine's own lines (what device and precision it chose, and why) next to uvicorn's."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("dotocr-serve: %(message)s"))
    engine_log = logging.getLogger("dotocr")
    engine_log.addHandler(handler)
    engine_log.setLevel(level.upper())


if __name__ == "__main__":
    sys.exit(main())
