"""``python -m app``: run the service with uvicorn, configured by ``KASTORE_*``.

``python -m app keys create --scope write`` makes an API key instead;
``python -m app migrate --from-data-dir DIR`` copies a local data directory
into the configured storage (``app.migrate``). A
failure to start (an invalid setting, the port taken, the data directory in
use or not writable, an unreadable key file) is one line on stderr and exit
status 1.

With ``KASTORE_WORKERS`` above 1, that many worker processes serve the same
port and storage, each building the app from the environment (``app.main:app``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from . import migrate
from .config import Settings
from .main import StartupError, create_app, open_storage
from .observability import configure_logging
from .security import hash_key, new_key
from .server import ENVIRONMENT_PROTOCOL, raise_open_files_limit, uvicorn_options

PROG = "python -m app"


def _parser() -> argparse.ArgumentParser:
    settings = "\n".join(
        f"  KASTORE_{name.upper():<26} {field.description or ''}"
        for name, field in Settings.model_fields.items()
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve kastore files over HTTP (with no command), or make an API key.",
        epilog=f"Settings, from environment variables:\n{settings}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    create = keys.add_parser(
        "create",
        help="print a new key once, and the line that configures it",
        description=(
            "Print a new API key, and the line to add to KASTORE_API_KEYS_FILE (or "
            "KASTORE_API_KEYS). The server keeps only the key's SHA-256: the key is "
            "shown once, give it to the client."
        ),
    )
    create.add_argument(
        "--scope",
        choices=["read", "write", "admin"],
        required=True,
        help="what the key may do: read; write (and read); admin (all, /metrics too)",
    )
    migrate.add_arguments(
        commands.add_parser(
            "migrate",
            help="copy a local data directory into the configured storage (S3, PostgreSQL)",
            description=(
                "Copy the stores of a local data directory into the storage the KASTORE_* "
                "settings name, checked by sha256; a re-run skips what is there already."
            ),
        )
    )
    return parser


def _create_key(scope: str) -> int:
    key = new_key()
    print(f"API key (shown once; the client sends it as 'Authorization: Bearer KEY'):\n{key}")
    print(f"\nAdd this line to KASTORE_API_KEYS_FILE or KASTORE_API_KEYS:\n{hash_key(key)} {scope}")
    return 0


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        problems = []
        for error in err.errors():
            name = "KASTORE_" + str(error["loc"][0]).upper() if error["loc"] else "a setting"
            value = error.get("input")
            shown = f"={value!r}" if isinstance(value, str | int | float) else ""
            problems.append(f"{name}{shown}: {error['msg']}")
        raise StartupError(f"invalid setting: {'; '.join(problems)}") from None


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is reported in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise StartupError(
            f"cannot listen on {host}:{port}: {err.strerror}; check KASTORE_HOST"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        why = "address already in use" if err.errno == errno.EADDRINUSE else err.strerror
        raise StartupError(
            f"cannot listen on {host}:{port}: {why}; stop what uses it, or set KASTORE_PORT "
            "(and KASTORE_HOST)"
        ) from None
    sock.set_inheritable(True)
    return sock


async def _check_storage(settings: Settings) -> None:
    """Open the storage once and close it: a failure to start is then one line."""
    storage = await open_storage(settings)
    await storage.close()


def _serve() -> int:
    settings = _settings()
    raise_open_files_limit()
    sock = _listen(settings.host, settings.port)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(sock.close)
        asyncio.run(_check_storage(settings))
        cleanup.callback(configure_logging(settings.log_level))
        options = uvicorn_options(settings)
        host, port = sock.getsockname()[:2]
        log = logging.getLogger("app")
        if settings.workers > 1:
            # Each worker builds the app from the environment (app.main:app).
            options["http"] = ENVIRONMENT_PROTOCOL
            config = uvicorn.Config(
                "app.main:app",
                **options,
                workers=settings.workers,
                log_config=None,
                access_log=False,
            )
            log.info("listening on http://%s:%d with %d workers", host, port, settings.workers)
            Multiprocess(config, sockets=[sock]).run()
            return 0
        config = uvicorn.Config(create_app(settings), **options, log_config=None, access_log=False)
        server = uvicorn.Server(config)
        log.info("listening on http://%s:%d", host, port)
        # uvicorn raises the stop signal again once it has shut down, which would
        # end the process before the last log lines are written: note it instead.
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, lambda *_: None)
        server.run(sockets=[sock])
        return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "keys":
            return _create_key(args.scope)
        if args.command == "migrate":
            return migrate.run(args, _settings())
        return _serve()
    except StartupError as err:
        print(f"kastore-service: {err}", file=sys.stderr)
    # A backend client that failed to start (an S3 store, whose runtime aborts the
    # process if it is freed while the interpreter shuts down) goes now.
    gc.collect()
    return 1


if __name__ == "__main__":
    sys.exit(main())
