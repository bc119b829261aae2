"""The C library in ``kastore/include``: its own test program, streams, and the example.

``test_kastore.c`` is compiled with AddressSanitizer and UBSan, so any read or
write out of bounds, leak or double free fails it; it checks every shared
reference file and prints how many it checked per folder, which is compared
here with what the folders hold.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from .._testdata import TESTDATA, read_json, shared_files

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "kastore" / "include"
HERE = Path(__file__).resolve().parent
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]

#: The exceptions of expected.json, as the C library's error codes.
ERROR_CODES = {
    "FileFormatError": -5,  # KAS_ERR_BAD_FILE_FORMAT
    "VersionTooOldError": -6,  # KAS_ERR_VERSION_TOO_OLD
    "VersionTooNewError": -7,  # KAS_ERR_VERSION_TOO_NEW
    "EOFError": -14,  # KAS_ERR_EOF
}
KAS_ERR_EOF = ERROR_CODES["EOFError"]
KAS_ERR_BAD_FILE_FORMAT = ERROR_CODES["FileFormatError"]


def _compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no C compiler (cc, gcc or clang) on PATH: the C library tests need one")
    return cc


def _compile(output: Path, sources: list[Path], flags: list[str], cc: str | None = None) -> Path:
    command = [cc or _compiler(), *flags, "-I", str(INCLUDE), *map(str, sources), "-o", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr}"
    assert done.stderr == "", done.stderr  # no warnings either
    return output


def _run(command: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, input=data, capture_output=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def test_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_kastore.c and the library, built once with the sanitizers."""
    build = tmp_path_factory.mktemp("c-build")
    return _compile(
        build / "test_kastore",
        [HERE / "test_kastore.c", INCLUDE / "kastore.c"],
        [*WARNINGS, *SANITIZE],
    )


def test_c_test_program(test_program: Path, tmp_path: Path) -> None:
    have_testdata = TESTDATA.is_dir()
    done = _run([str(test_program), str(TESTDATA) if have_testdata else "-", str(tmp_path)])
    output = done.stdout.decode()
    assert done.returncode == 0, output + done.stderr.decode()
    assert "all checks passed" in output
    if not have_testdata:
        pytest.skip(f"shared test data not found at {TESTDATA}: only the self-contained tests ran")
    counts = (line.split()[1:] for line in output.splitlines() if line.startswith("files "))
    checked = {folder: int(count) for folder, count in counts}
    malformed = TESTDATA / "reference" / "malformed"
    expected = {
        "reference/malformed": len(list(malformed.glob("*.kas"))),
        "written-by-reference": len(list((TESTDATA / "written-by-reference").glob("*.kas"))),
        "tskit": len(list((TESTDATA / "tskit").glob("*.trees"))),
        "reference/v1": len(list((TESTDATA / "reference" / "v1").glob("*.kas"))),
    }
    assert all(count > 0 for count in expected.values()), expected
    assert len(read_json(malformed / "expected.json")) == expected["reference/malformed"]
    assert checked == expected


def _valid_stores(testdata: Path) -> list[bytes]:
    paths = sorted((testdata / "written-by-reference").glob("*.kas"))
    paths += sorted((testdata / "tskit").glob("*.trees"))
    assert paths
    return [path.read_bytes() for path in paths]


def test_stores_back_to_back_from_a_pipe(test_program: Path, testdata: Path) -> None:
    """Stores read one after another from a pipe, where nothing can seek."""
    stores = _valid_stores(testdata)
    command = [str(test_program), "--stream", str(len(stores)), str(KAS_ERR_EOF)]
    done = _run(command, b"".join(stores))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["stores", str(len(stores))]


@pytest.mark.parametrize("name", shared_files("reference/malformed", ".kas"))
def test_malformed_from_a_pipe(test_program: Path, testdata: Path, name: str) -> None:
    folder = testdata / "reference" / "malformed"
    code = ERROR_CODES[read_json(folder / "expected.json")[name]]
    data = (folder / name).read_bytes()
    done = _run([str(test_program), "--stream", "0", str(code)], data)
    assert done.returncode == 0, done.stderr.decode()


def test_truncated_store_after_a_good_one_from_a_pipe(test_program: Path, testdata: Path) -> None:
    first, second = _valid_stores(testdata)[-2:]
    data = first + second[: len(second) // 2]
    done = _run([str(test_program), "--stream", "1", str(KAS_ERR_BAD_FILE_FORMAT)], data)
    assert done.returncode == 0, done.stderr.decode()


def test_huge_claimed_size_on_a_pipe(test_program: Path) -> None:
    """A header claiming 2**62 bytes costs no more memory than the pipe holds.

    AddressSanitizer aborts on an allocation that large, so trusting the
    header would fail this test, not just slow it down.
    """
    header = struct.pack("<8sHHIQ40x", b"\x89KAS\r\n\x1a\n", 1, 0, 2, 2**62)
    data = header + bytes(5000)
    done = _run([str(test_program), "--stream", "0", str(KAS_ERR_BAD_FILE_FORMAT)], data)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize("seed", range(40))
def test_damaged_stores_from_a_pipe(test_program: Path, testdata: Path, seed: int) -> None:
    """Damaged stores through the path that reads a stream of unknown size.

    Whatever the damage, reading ends with an error code and the sanitizers
    see nothing out of bounds.
    """
    rng = random.Random(seed)
    data = bytearray((testdata / "tskit" / "single_population.trees").read_bytes())
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        elif data:
            position = rng.randrange(min(len(data), 64 * 8))
            data[position] ^= rng.randrange(1, 256)
    done = _run([str(test_program), "--stream", "any", "any"], bytes(data))
    assert done.returncode == 0, done.stderr.decode()


def test_example_program(tmp_path: Path) -> None:
    """The example builds as strict, pedantic C99 without sanitizers, and runs."""
    program = _compile(
        tmp_path / "example",
        [HERE / "example.c", INCLUDE / "kastore.c"],
        [*WARNINGS, "-pedantic", "-O2"],
    )
    done = _run([str(program), str(tmp_path / "example.kas")])
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == [
        "2 keys",
        "heights[0] = 1.5",
        "heights[1] = 2.25",
        "heights[2] = 3",
        "counts[0] = 0",
        "counts[1] = 1",
        "counts[2] = 4",
        "counts[3] = 9",
    ]


CPP_PROGRAM = """
#include <kastore.h>
#include <cstdio>

int main() {
    kastore_t store;
    const int32_t values[] = {1, 2, 3};
    int ret = kastore_openf(&store, std::tmpfile(), "w", 0);
    if (ret == 0) {
        ret = kastore_puts_int32(&store, "values", values, 3, KAS_BORROWS_ARRAY);
    }
    kas_version_t version = kas_version();
    return kastore_close(&store) != 0 || ret != 0 || version.major != KAS_VERSION_MAJOR;
}
"""


def test_header_compiles_as_cpp(tmp_path: Path) -> None:
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    library = tmp_path / "kastore.o"
    _compile(library, [INCLUDE / "kastore.c"], [*WARNINGS, "-c"])
    source = tmp_path / "check.cpp"
    source.write_text(CPP_PROGRAM, encoding="utf-8")
    program = _compile(
        tmp_path / "check", [source, library], ["-std=c++11", "-Wall", "-Wextra", "-Werror"], cxx
    )
    done = _run([str(program)])
    assert done.returncode == 0, done.stderr.decode()
