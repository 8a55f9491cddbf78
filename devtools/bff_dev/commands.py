"""``bff dev`` and ``bff emulator``: what :mod:`bff.cli` runs when the development tools are installed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

import uvicorn

from bff.cli import _warn_unknown_variables
from bff.config import ConfigError
from bff.logs import configure_logging


def _loopback_sockets(port: int) -> list[socket.socket]:
    """Listen on 127.0.0.1 and, when the machine has it, ::1, so http://localhost works either way."""
    socks = []
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            # IPPROTO_TCP explicitly: asyncio turns TCP_NODELAY on only for sockets that say so, and
            # without it every kept-alive response waited ~40 ms for delayed ACKs.
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
        except OSError:
            sock.close()
            if family == socket.AF_INET:
                raise
            continue
        socks.append(sock)
    return socks


def run_dev(args: argparse.Namespace) -> int:
    from bff_dev.demo import create_dev_app

    try:
        app, settings = create_dev_app(args.port, os.environ)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    configure_logging(settings.log_level, settings.log_format)
    _warn_unknown_variables()
    sockets = _loopback_sockets(args.port)
    config = uvicorn.Config(app, log_config=None, server_header=False, lifespan="on")
    server = uvicorn.Server(config)
    print(
        f"\n  bff dev is running: open {settings.public_url}/  (Ctrl-C stops it)\n"
        "  Sign in as guest, guest2, linked or admin (admin may change Guest transaction limits).\n",
        flush=True,
    )
    asyncio.run(server.serve(sockets=sockets))
    return 0


def run_emulator(args: argparse.Namespace) -> int:
    from bff_dev.emulator import EmulatorClient, EmulatorConfig, create_emulator_app

    base = args.base_url or f"http://{args.host}:{args.port}"
    secret = os.environ.get("BFF_EMULATOR_CLIENT_SECRET", "")
    if not secret:
        print(
            "Set BFF_EMULATOR_CLIENT_SECRET: the secret of the emulator's one registered client.",
            file=sys.stderr,
        )
        return 1
    client = EmulatorClient(
        client_id=args.client_id,
        client_secret=secret,
        redirect_uris=args.redirect_uri,
        post_logout_redirect_uris=args.post_logout_redirect_uri,
        backchannel_logout_uri=args.backchannel_logout_uri,
    )
    config = EmulatorConfig(base_url=base, clients=[client], access_token_ttl=args.access_token_ttl)
    logging.basicConfig(level="INFO")
    print(
        f"Kryptos emulator: issuer {config.issuer}, data API {config.data_api_url}, "
        f"connect API {config.connect_api_url}",
        flush=True,
    )
    uvicorn.run(create_emulator_app(config), host=args.host, port=args.port, log_level="info")
    return 0
