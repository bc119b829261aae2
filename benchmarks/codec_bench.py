"""Speed of the kastore codec, each figure beside a baseline measured in this run.

    python benchmarks/codec_bench.py [--mib 512] [--keys 60000] [--repeat 3]
                                     [--reference DIR]

Baselines: numpy's own I/O on the same bytes (``ndarray.tofile``, ``numpy.memmap``,
``numpy.frombuffer``) for large arrays, and ``numpy.savez`` / ``numpy.load`` for
many small arrays. With ``--reference DIR`` (a directory holding the reference
``kastore`` package, e.g. from ``pip install --target DIR kastore==0.3.6``) the
reference implementation is measured too, in a subprocess so that its package
does not clash with ours. Each figure is the best of ``--repeat`` runs; the
machine is shared and noisy, so read ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import kastore


def compare(
    repeat: int,
    ours: Callable[[], object],
    baseline: Callable[[], object],
    setup: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Best time of each, with runs alternating so both see the same machine state."""
    best = [float("inf"), float("inf")]
    for round_ in range(repeat):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for which in order:
            if setup is not None:
                setup()
            run = ours if which == 0 else baseline
            start = time.perf_counter()
            run()
            best[which] = min(best[which], time.perf_counter() - start)
    return best[0], best[1]


def fresh(*paths: Path) -> Callable[[], None]:
    """Remove the output files and flush dirty pages, so no write pays for another."""

    def setup() -> None:
        for path in paths:
            path.unlink(missing_ok=True)
        os.sync()

    return setup


def row(label: str, ours: str, base: str, ratio: float, target: str) -> None:
    print(f"{label:<34} {ours:>14} {base:>14} {ratio:>7.2f}x  {target}")


def gbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f} GB/s"


def small_arrays(n: int) -> dict[str, np.ndarray]:
    dtypes = (np.int32, np.float64, np.uint8, np.int64)
    return {
        f"table_{i // 100:04d}/column_{i:06d}": np.arange(i % 9, dtype=dtypes[i % 4])
        for i in range(n)
    }


#: A real tree sequence: 62 keys, what tskit users read most.
TSKIT_FILE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "testdata"
    / "tskit"
    / "island_model_with_metadata.trees"
)


def read_whole(path: Path, engine: str) -> None:
    """Load a file and touch every array, as tskit does when it opens a file."""
    store = kastore.load(path, read_all=True, engine=engine)
    for key in store:
        store[key]


REFERENCE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import kastore
    big_path, many_path, n, repeat, engine = sys.argv[1:6]
    n, repeat = int(n), int(repeat)
    def best(f):
        b = float("inf")
        for _ in range(repeat):
            t = time.perf_counter(); f(); b = min(b, time.perf_counter() - t)
        return b
    dtypes = (np.int32, np.float64, np.uint8, np.int64)
    many = {f"table_{i // 100:04d}/column_{i:06d}": np.arange(i % 9, dtype=dtypes[i % 4])
            for i in range(n)}
    out = {}
    try:
        out["dump_per_key"] = best(lambda: kastore.dump(many, many_path, engine=engine)) / n
    except Exception as e:
        out["dump_per_key_error"] = repr(e)[:80]
    kastore.dump(many, many_path)
    out["list_per_key"] = best(lambda: list(kastore.load(many_path, engine=engine).keys())) / n
    big = np.arange(int(sys.argv[6]), dtype=np.float64)
    out["dump_big"] = best(lambda: kastore.dump({"x": big}, big_path, engine=engine))
    out["load_sum"] = best(lambda: kastore.load(big_path, engine=engine)["x"].sum())
    data = open(big_path, "rb").read()
    out["loads_sum"] = best(lambda: kastore.loads(data)["x"].sum())
    def read_tskit():
        store = kastore.load(sys.argv[7], read_all=True, engine=engine)
        for key in store:
            store[key]
    out["tskit_read"] = best(read_tskit)
    print(json.dumps(out))
    """
)


def reference_figures(
    directory: str, tmp: Path, n_keys: int, n_elements: int, repeat: int, engine: str
) -> dict[str, float | str]:
    env = {**os.environ, "PYTHONPATH": directory}
    # Keys beyond 65,535 break the reference's Python writer, so it gets its own set size.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            REFERENCE_SCRIPT,
            str(tmp / "ref-big.kas"),
            str(tmp / "ref-many.kas"),
            str(n_keys),
            str(repeat),
            engine,
            str(n_elements),
            str(TSKIT_FILE),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp,
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    figures: dict[str, float | str] = json.loads(result.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the large array (MiB)")
    parser.add_argument("--keys", type=int, default=60_000, help="number of small arrays")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference", help="directory holding the reference kastore package")
    args = parser.parse_args()

    n_elements = args.mib * 2**20 // 8
    big = np.arange(n_elements, dtype=np.float64)
    nbytes = big.nbytes
    many = small_arrays(args.keys)

    with tempfile.TemporaryDirectory(
        prefix="kastore-bench-", dir=os.environ.get("TMPDIR")
    ) as tmpdir:
        tmp = Path(tmpdir)
        kas_path, raw_path, npz_path, many_path = (
            tmp / "big.kas",
            tmp / "big.raw",
            tmp / "many.npz",
            tmp / "many.kas",
        )

        print(f"kastore {kastore.__version__}, numpy {np.__version__}, best of {args.repeat}")
        print(f"{'':<34} {'kastore':>14} {'baseline':>14} {'ratio':>8}  target")
        print(f"-- one float64 array of {args.mib} MiB")
        t_dump, t_tofile = compare(
            args.repeat,
            lambda: kastore.dump({"x": big}, kas_path),
            lambda: big.tofile(raw_path),
            fresh(kas_path, raw_path),
        )
        row(
            "dump vs ndarray.tofile",
            gbps(nbytes, t_dump),
            gbps(nbytes, t_tofile),
            t_tofile / t_dump,
            ">= 0.8x",
        )

        kastore.dump({"x": big}, kas_path)
        data_offset = os.path.getsize(kas_path) - nbytes

        def lazy_sum() -> None:
            with kastore.load(kas_path) as store:
                store["x"].sum()

        def memmap_sum() -> None:
            np.memmap(
                kas_path, dtype=np.float64, mode="r", offset=data_offset, shape=(n_elements,)
            ).sum()

        t_load, t_memmap = compare(args.repeat, lazy_sum, memmap_sum)
        row(
            "load (lazy) + sum vs numpy.memmap",
            gbps(nbytes, t_load),
            gbps(nbytes, t_memmap),
            t_memmap / t_load,
            ">= 0.8x",
        )

        encoded = kas_path.read_bytes()
        t_loads, t_frombuffer = compare(
            args.repeat,
            lambda: kastore.loads(encoded)["x"].sum(),
            lambda: np.frombuffer(encoded, np.float64, n_elements, data_offset).sum(),
        )
        row(
            "loads + sum vs numpy.frombuffer",
            gbps(nbytes, t_loads),
            gbps(nbytes, t_frombuffer),
            t_frombuffer / t_loads,
            ">= 0.8x",
        )

        n = args.keys
        print(f"-- {n:,} small arrays (keys like 'table_0001/column_000123')")
        t_dump_many, t_savez = compare(
            args.repeat,
            lambda: kastore.dump(many, many_path),
            lambda: np.savez(npz_path, **many),
            fresh(many_path, npz_path),
        )
        row(
            "dump vs numpy.savez (us/key)",
            f"{t_dump_many / n * 1e6:.3f} us",
            f"{t_savez / n * 1e6:.3f} us",
            t_savez / t_dump_many,
            "<= 1 us/key",
        )

        kastore.dump(many, many_path)
        np.savez(npz_path, **many)

        def list_keys() -> None:
            with kastore.load(many_path) as store:
                list(store)

        def npz_keys() -> None:
            with np.load(npz_path) as npz:
                list(npz.files)

        t_list, t_npz = compare(args.repeat, list_keys, npz_keys)
        row(
            "load + list keys vs numpy.load (npz)",
            f"{t_list / n * 1e6:.3f} us",
            f"{t_npz / n * 1e6:.3f} us",
            t_npz / t_list,
            "<= 0.3 us/key",
        )

        c_figures = c_engine_figures(args, tmp, big, many, t_tofile, t_memmap, t_dump_many, t_list)

        if args.reference:
            ours = {
                "dump_big": t_dump,
                "load_sum": t_load,
                "loads_sum": t_loads,
                "dump_per_key": t_dump_many / n,
                "list_per_key": t_list / n,
            }
            for engine in ("python", "c"):
                ref = reference_figures(
                    args.reference, tmp, min(n, 60_000), n_elements, args.repeat, engine
                )
                print(f"-- reference kastore from {args.reference}, engine={engine} (baseline)")
                print_reference(ours, ref, nbytes)
                if engine == "c":
                    print("-- our C engine vs the reference's C engine (baseline)")
                    print_reference_c(c_figures, ref)


def c_engine_figures(
    args: argparse.Namespace,
    tmp: Path,
    big: np.ndarray,
    many: dict[str, np.ndarray],
    t_tofile: float,
    t_memmap: float,
    t_dump_many_py: float,
    t_list_py: float,
) -> dict[str, float]:
    """The C engine's figures, printed beside numpy and the Python engine."""
    from kastore import _cengine

    if not _cengine.available():
        print("-- C engine: not built in this installation")
        return {}
    nbytes, n = big.nbytes, len(many)
    kas_path, raw_path, many_path = tmp / "c-big.kas", tmp / "c-big.raw", tmp / "c-many.kas"
    print("-- C engine (engine='c')")
    t_dump, t_base = compare(
        args.repeat,
        lambda: kastore.dump({"x": big}, kas_path, engine="c"),
        lambda: big.tofile(raw_path),
        fresh(kas_path, raw_path),
    )
    row(
        "dump vs ndarray.tofile",
        gbps(nbytes, t_dump),
        gbps(nbytes, t_base),
        t_base / t_dump,
        ">= 0.8x",
    )
    kastore.dump({"x": big}, kas_path, engine="c")
    offset = os.path.getsize(kas_path) - nbytes
    t_load, t_map = compare(
        args.repeat,
        lambda: kastore.load(kas_path, engine="c")["x"].sum(),
        lambda: np.memmap(kas_path, np.float64, "r", offset, (len(big),)).sum(),
    )
    row(
        "load (lazy) + sum vs numpy.memmap",
        gbps(nbytes, t_load),
        gbps(nbytes, t_map),
        t_map / t_load,
        ">= 0.8x",
    )
    t_dump_many, t_py = compare(
        args.repeat,
        lambda: kastore.dump(many, many_path, engine="c"),
        lambda: kastore.dump(many, many_path, engine="python"),
        fresh(many_path),
    )
    row(
        "dump vs Python engine (us/key)",
        f"{t_dump_many / n * 1e6:.3f} us",
        f"{t_py / n * 1e6:.3f} us",
        t_py / t_dump_many,
        "<= 0.2 us/key",
    )
    kastore.dump(many, many_path)
    t_list, t_list_base = compare(
        args.repeat,
        lambda: list(kastore.load(many_path, engine="c")),
        lambda: list(kastore.load(many_path, engine="python")),
    )
    row(
        "load + list vs Python engine (us/key)",
        f"{t_list / n * 1e6:.3f} us",
        f"{t_list_base / n * 1e6:.3f} us",
        t_list_base / t_list,
        "<= 0.1 us/key",
    )
    figures = {"dump_per_key": t_dump_many / n, "list_per_key": t_list / n}
    if TSKIT_FILE.exists():
        t_tskit, t_tskit_py = compare(
            max(args.repeat, 20),
            lambda: read_whole(TSKIT_FILE, "c"),
            lambda: read_whole(TSKIT_FILE, "python"),
        )
        row(
            "tskit file, read all vs Python engine",
            f"{t_tskit * 1e6:.0f} us",
            f"{t_tskit_py * 1e6:.0f} us",
            t_tskit_py / t_tskit,
            "",
        )
        figures["tskit_read"] = t_tskit
    return figures


def print_reference_c(ours: dict[str, float], ref: dict[str, float | str]) -> None:
    if "error" in ref or not ours:
        print("   not measured")
        return
    for label, key, scale, unit, target in (
        ("dump (us/key)", "dump_per_key", 1e6, "us", "<= 0.2 us/key"),
        ("load + list (us/key)", "list_per_key", 1e6, "us", "<= 0.1 us/key"),
        ("tskit file, read all", "tskit_read", 1e6, "us", "<= 0.5x the reference's time"),
    ):
        value = ref.get(key)
        if isinstance(value, float) and key in ours:
            row(
                label,
                f"{ours[key] * scale:.3f} {unit}",
                f"{value * scale:.3f} {unit}",
                value / ours[key],
                target,
            )


def print_reference(ours: dict[str, float], ref: dict[str, float | str], nbytes: int) -> None:
    if "error" in ref:
        print(f"   not measured: {ref['error']}")
        return
    per_key = lambda s: f"{s * 1e6:.3f} us"  # noqa: E731
    throughput = lambda s: gbps(nbytes, s)  # noqa: E731
    for label, key, fmt in (
        ("dump (large)", "dump_big", throughput),
        ("load (lazy) + sum", "load_sum", throughput),
        ("loads + sum", "loads_sum", throughput),
        ("dump (us/key)", "dump_per_key", per_key),
        ("load + list (us/key)", "list_per_key", per_key),
    ):
        value = ref.get(key)
        if isinstance(value, float):
            row(label, fmt(ours[key]), fmt(value), value / ours[key], "")
        else:
            print(f"{label:<34} {fmt(ours[key]):>14} {'failed':>14}  {ref.get(key + '_error')}")


if __name__ == "__main__":
    main()
