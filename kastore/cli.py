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


def _parser() -> argparse.ArgumentParser:
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
    ls.add_argument("file", metavar="FILE")

    dump = commands.add_parser("dump", help="print the array of one key, one value per line")
    dump.add_argument("file", metavar="FILE")
    dump.add_argument("key", metavar="KEY")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 1 when the file cannot be read, 2 for
    a usage error.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), format="%(name)s: %(message)s"
    )
    try:
        with load(args.file) as store:
            logger.info("%s: %d keys", args.file, len(store))
            if args.command == "ls":
                output = _ls(store, long=args.long, human=args.human_readable)
            else:
                output = _dump(store, args.key)
        sys.stdout.write(output)
        sys.stdout.flush()
    except KeyError as err:
        print(f"kastore: {args.file}: no key {err.args[0]!r} in the file", file=sys.stderr)
        return 1
    except EOFError:
        print(f"kastore: {args.file}: empty file, not a kastore file", file=sys.stderr)
        return 1
    except KastoreException as err:
        print(f"kastore: {args.file}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if isinstance(err, BrokenPipeError):
            # The reader went away (`kastore dump ... | head`): not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        print(f"kastore: {args.file}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0
