"""Command line: ``bff serve``, ``bff check-config``; with the development tools also ``bff dev``, ``bff emulator``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import socket
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import cast

import uvicorn
from uvicorn.supervisors import Multiprocess

from bff import metrics
from bff.config import ConfigError, Settings, load_settings, unknown_variables
from bff.logs import configure_logging
from bff.web.protocol import BoundedHttpToolsProtocol, HeadLimits

log = logging.getLogger("bff.cli")


def _settings_or_exit(*, dev: bool = False) -> Settings:
    try:
        return load_settings(dev=dev)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(1) from None


def _redis_url_problem(settings: Settings) -> str | None:
    """What is wrong with BFF_REDIS_URL's structure (hosts, Sentinel service, Cluster db, query), checked
    without connecting. The message names the problem, never any part of the URL (it may hold a password)."""
    if settings.uses_memory_store:
        return None
    from bff.sessions.redis_url import parse_redis_url

    try:
        parse_redis_url(settings.redis_url.get_secret_value())
    except ValueError as exc:
        return f"invalid settings:\n  - BFF_REDIS_URL: {exc}"
    return None


class _WithholdTracebackText(logging.Filter):
    """uvicorn logs a failed start-up as Starlette's formatted traceback *text* (``lifespan.startup.failed``),
    exception messages included, and those may quote a setting (a URL with its password); it also formats
    exceptions into messages ("Error loading ASGI app factory: %s"). Keep the exception type only; the
    formatters already do so for records carrying ``exc_info``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, BaseException) for a in record.args):
            record.args = tuple(type(a).__name__ if isinstance(a, BaseException) else a for a in record.args)
        message = record.getMessage()
        if "Traceback (most recent call last)" in message:
            last = message.strip().splitlines()[-1]
            record.msg = "start-up failed with %s (its message is withheld: it may quote a setting)"
            record.args = (last.split(":", 1)[0].strip()[:200],)
        return True


def _withhold_traceback_text() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _WithholdTracebackText) for f in logger.filters):
        logger.addFilter(_WithholdTracebackText())


def _warn_unknown_variables() -> None:
    unknown = unknown_variables()
    if unknown:
        log.warning("ignored: not bff settings", extra={"hint": ", ".join(unknown)})


def app_from_environment() -> object:
    """uvicorn factory for ``bff serve``: each worker parses the same environment once."""
    from bff.app import create_app

    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format, settings.audit_log)
    _withhold_traceback_text()
    return create_app(settings)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    if settings.uses_memory_store and args.workers > 1:
        print(
            "BFF_REDIS_URL=memory:// keeps sessions in one process; use Redis to run more than one worker.",
            file=sys.stderr,
        )
        return 1
    problem = _redis_url_problem(settings)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    configure_logging(settings.log_level, settings.log_format, settings.audit_log)
    _withhold_traceback_text()
    _warn_unknown_variables()
    with contextlib.ExitStack() as stack:
        if settings.metrics_port:
            # Several workers write to one multi-process directory that this supervising process serves.
            multiprocess = args.workers > 1
            if multiprocess:
                stack.enter_context(metrics.multiprocess_dir())
            metrics.serve_metrics(settings.metrics_port, multiprocess=multiprocess, host=args.host)
        config = uvicorn.Config(
            "bff.cli:app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            # X-Forwarded-* are handled by bff.web.forwarded (only from BFF_TRUSTED_PROXIES), not by uvicorn.
            proxy_headers=False,
            server_header=False,
            date_header=False,
            access_log=False,  # ours (bff.access) logs the route template, never a query string
            log_config=None,
            timeout_graceful_shutdown=20,
            loop="uvloop",
            # httptools plus a head deadline and size/count bounds (bff.web.protocol); a partial is picklable, so
            # spawned workers get it too.
            http=cast(
                "type[asyncio.Protocol]",
                functools.partial(BoundedHttpToolsProtocol, limits=HeadLimits.from_settings(settings)),
            ),
        )
        return _serve(config, settings.verify_port)
    return 0


def bind_sockets(config: uvicorn.Config, verify_port: int) -> list[socket.socket]:
    """The listening sockets: ``config.port``'s, and ``verify_port``'s when it is not 0."""
    sockets = [config.bind_socket()]
    if verify_port:
        main_port, config.port = config.port, verify_port  # bind_socket binds (and logs) config.port
        try:
            sockets.append(config.bind_socket())
        finally:
            config.port = main_port
    return sockets


def _serve(config: uvicorn.Config, verify_port: int) -> int:
    """What ``uvicorn.run`` does, on one socket or, with ``BFF_VERIFY_PORT``, two: every worker serves both, and
    tells them apart by the port a request came in on (:mod:`bff.routes.verify`)."""
    if verify_port == config.port:
        print("BFF_VERIFY_PORT must differ from the port bff serves on (--port).", file=sys.stderr)
        return 1
    sockets = bind_sockets(config, verify_port)
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
    if config.workers == 1 and not server.started:
        return 3  # uvicorn's STARTUP_FAILURE: the lifespan failed (its reason is logged)
    return 0


def _dev_tools(command: str) -> ModuleType | None:
    """``bff_dev.commands`` (devtools/ in the repository), or None after saying how to get it."""
    try:
        return importlib.import_module("bff_dev.commands")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("bff_dev"):
            raise
    print(
        f"bff {command} needs bff's development tools (the Kryptos emulator and the demo), which the bff package "
        "and its image do not contain. From a clone of the repository run scripts/dev, or install them into "
        "this environment with `uv sync` there (the dev dependency group installs devtools/).",
        file=sys.stderr,
    )
    return None


def cmd_dev(args: argparse.Namespace) -> int:
    tools = _dev_tools("dev")
    return 2 if tools is None else int(tools.run_dev(args))


def cmd_emulator(args: argparse.Namespace) -> int:
    tools = _dev_tools("emulator")
    return 2 if tools is None else int(tools.run_emulator(args))


def cmd_check_config(args: argparse.Namespace) -> int:
    for name in unknown_variables():  # names only, never values; a warning, not a failure
        print(f"warning: {name} is not a bff setting; it is ignored", file=sys.stderr)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    problem = _redis_url_problem(settings)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    store = "memory (one process only)" if settings.uses_memory_store else "redis"
    print(
        f"settings OK: issuer={settings.issuer} client_id={settings.client_id} public_url={settings.public_url} "
        f"store={store} session_keys={len(settings.session_secrets)} encryption_keys={len(settings.encryption_keys)}"
    )
    return 0


def _positive_port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError("port must be 1-65535")
    return port


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except for options that have none (None, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bff",
        description="OAuth 2.0 / OIDC backend-for-frontend for Kryptos. Settings come from BFF_* environment "
        "variables (see the README's Settings); `bff <command> --help` describes each command.",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="production server",
        description="Run the production server (uvicorn, uvloop, httptools) with the settings in BFF_* "
        "environment variables. It serves /auth/*, /api/*, /healthz and /readyz, and no SPA: serve your SPA's "
        "files from the same origin (ingress or static server). X-Forwarded-* headers are believed only from "
        "BFF_TRUSTED_PROXIES; Prometheus metrics are on BFF_METRICS_PORT; with BFF_VERIFY_PORT set, the ingress's "
        "/auth/verify is served on that port alone.",
        formatter_class=_HelpFormatter,
    )
    serve.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104 - a container listens on all interfaces
        help="address to listen on, for HTTP, the metrics port and the verify port (0.0.0.0: every interface, as in a "
        "container; 127.0.0.1: this machine only)",
    )
    serve.add_argument("--port", type=_positive_port, default=8000, help="HTTP port")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (more than one needs Redis, not BFF_REDIS_URL=memory://)",
    )
    serve.set_defaults(func=cmd_serve)
    dev = sub.add_parser(
        "dev",
        help="one-command local demo (emulator + BFF + SPA)",
        description="The one-command local demo: the Kryptos emulator (at /_kryptos), the BFF and the demo SPA "
        "on http://localhost:PORT, sessions in memory, fresh keys each run; no Redis, no Kryptos account. "
        "Needs bff's development tools (devtools/ in the repository, installed by `uv sync` or scripts/dev).",
        formatter_class=_HelpFormatter,
    )
    dev.add_argument("--port", type=_positive_port, default=8000, help="port on localhost (127.0.0.1 and ::1)")
    dev.set_defaults(func=cmd_dev)
    emu = sub.add_parser(
        "emulator",
        help="the Kryptos emulator alone",
        description="The Kryptos emulator alone: an OpenID provider (issuer BASE/oidc), the data API (BASE/api) "
        "and the connect API (BASE/connect), with seeded users (guest, guest2, linked, admin) and one "
        "registered client whose secret is the environment variable BFF_EMULATOR_CLIENT_SECRET. For "
        "development and tests, never production. Needs bff's development tools (devtools/ in the repository).",
        formatter_class=_HelpFormatter,
    )
    emu.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emu.add_argument("--port", type=_positive_port, default=9000, help="port to listen on")
    emu.add_argument(
        "--base-url",
        default=None,
        help="the emulator's external base URL, used in every URL it hands out (default: http://HOST:PORT)",
    )
    emu.add_argument("--client-id", default="bff-dev", help="client id of the one registered client")
    emu.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        help="redirect URI registered for the client, e.g. http://localhost:8000/auth/callback (repeatable)",
    )
    emu.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        default=[],
        help="post-logout redirect URI registered for the client, e.g. http://localhost:8000/ (repeatable)",
    )
    emu.add_argument(
        "--backchannel-logout-uri",
        default=None,
        help="where the emulator posts back-channel logout tokens, e.g. "
        "http://localhost:8000/auth/backchannel-logout (default: none, no logout tokens are posted)",
    )
    emu.add_argument("--access-token-ttl", type=int, default=86400, help="access token lifetime, seconds")
    emu.set_defaults(func=cmd_emulator)
    check = sub.add_parser(
        "check-config",
        help="parse settings, print every problem, exit 1 if any",
        description="Parse the BFF_* settings (and the structure of BFF_REDIS_URL), print every problem at once "
        "and exit 1 if there is any, else print a summary and exit 0. Connects to nothing: neither Redis nor "
        "the provider is contacted (GET /readyz of a running bff checks those). Secrets are never printed; "
        "unknown BFF_* names are warned about.",
        formatter_class=_HelpFormatter,
    )
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
