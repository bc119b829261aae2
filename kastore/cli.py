"""The ``kastore`` command line: list the keys of a file, or print one array."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import humanize

from ._reader import Store, load
from ._version import __version__
from .exceptions import KastoreException

logger = logging.getLogger("kastore")


def get_kastore_parser() -> argparse.ArgumentParser:
    """The argument parser; the parsed arguments' ``runner(args)`` runs the command.

    The names (``get_kastore_parser``, ``runner``, ``store``, ``array``) are the
    reference command line's, so code written against it keeps working.
    """
    parser = argparse.ArgumentParser(
        prog="kastore", description="Inspect kastore files (including tskit .trees files)."
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more detail (repeat for more)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = commands.add_parser("ls", help="list the keys of a file")
    ls.add_argument("-l", "--long", action="store_true", help="show dtype, length and size")
    ls.add_argument(
        "-H", "--human-readable", action="store_true", help="sizes like 5B, 456.7K (with -l)"
    )
    ls.add_argument("store", metavar="FILE")
    ls.set_defaults(runner=run_list)

    dump = commands.add_parser("dump", help="print the array of one key, one value per line")
    dump.add_argument("store", metavar="FILE")
    dump.add_argument("array", metavar="KEY")
    dump.set_defaults(runner=run_dump)
    return parser


def _size(nbytes: int, human: bool) -> str:
    return humanize.naturalsize(nbytes, gnu=True) if human else str(nbytes)


def _ls(store: Store, *, long: bool, human: bool) -> str:
    if not long:
        return "".join(f"{key}\n" for key in store)
    rows = []
    for key in store:
        info = store.info(key)
        rows.append((str(info.dtype), str(info.shape[0]), _size(info.size, human), key))
    if not rows:
        return ""
    widths = [max(len(row[col]) for row in rows) for col in range(3)]
    return "".join(
        f"{dtype:<{widths[0]}} {length:>{widths[1]}} {size:>{widths[2]}} {key}\n"
        for dtype, length, size, key in rows
    )


def _dump(store: Store, key: str) -> str:
    if key not in store:
        raise KeyError(key)
    values = store[key].tolist()
    return "".join(f"{value}\n" for value in values)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")


def _write(output: str) -> None:
    sys.stdout.write(output)
    sys.stdout.flush()


def run_list(args: argparse.Namespace) -> None:
    """``kastore ls``: print the keys of ``args.store`` (with ``-l``, more).

    Raises what ``load`` raises for a file that cannot be read.
    """
    _setup_logging(args)
    with load(args.store) as store:
        logger.info("%s: %d keys", args.store, len(store))
        output = _ls(store, long=args.long, human=args.human_readable)
    _write(output)


def run_dump(args: argparse.Namespace) -> None:
    """``kastore dump``: print the array ``args.array`` of ``args.store``.

    Raises ``KeyError`` for a key the file lacks, and what ``load`` raises.
    """
    _setup_logging(args)
    with load(args.store) as store:
        logger.info("%s: %d keys", args.store, len(store))
        output = _dump(store, args.array)
    _write(output)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 1 when the file cannot be read, 2 for
    a usage error.
    """
    parser = get_kastore_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        args.runner(args)
    except KeyError as err:
        print(f"kastore: {args.store}: no key {err.args[0]!r} in the file", file=sys.stderr)
        return 1
    except EOFError:
        print(f"kastore: {args.store}: empty file, not a kastore file", file=sys.stderr)
        return 1
    except KastoreException as err:
        print(f"kastore: {args.store}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if isinstance(err, BrokenPipeError):
            # The reader went away (`kastore dump ... | head`): not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        print(f"kastore: {args.store}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def kastore_main() -> None:
    """The reference command line's entry point: run ``main()``, exit if it fails."""
    status = main()
    if status:
        raise SystemExit(status)
