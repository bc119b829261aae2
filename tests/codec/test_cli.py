"""The ``kastore`` command line, through ``main(argv)`` and once as ``python -m kastore``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kastore
from kastore.cli import main

from ._support import header_bytes

# The reference documentation's example, verbatim.
DOCS_LS_LH = "int8   5  5B one\nuint64 5 40B two\n"
DOCS_LS_LH_AFTER_ADDING_THREE = "int8    5  5B one\nfloat64 3 24B three\nuint64  5 40B two\n"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], "one\ntwo\n"),
        (["-l"], "int8   5  5 one\nuint64 5 40 two\n"),
        (["-lH"], DOCS_LS_LH),
        (["-l", "-H"], DOCS_LS_LH),
        (["--long", "--human-readable"], DOCS_LS_LH),
    ],
)
def test_ls(
    docs_example_file: Path,
    options: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ls", *options, str(docs_example_file)]) == 0
    assert capsys.readouterr() == (expected, "")


def test_ls_lh_after_adding_a_key_as_the_docs_do(
    docs_example_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with kastore.load(docs_example_file) as kas:
        kas_dict = dict(kas)
        kas_dict["three"] = np.array([0.5772, 2.7818, 3.1415])
        kastore.dump(kas_dict, tmp_path / "tmp2.kas")
    assert main(["ls", "-lH", str(tmp_path / "tmp2.kas")]) == 0
    assert capsys.readouterr() == (DOCS_LS_LH_AFTER_ADDING_THREE, "")


def test_ls_human_readable_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {"big": np.zeros(1000, dtype=np.float64), "huge": np.zeros(3 << 20, dtype=np.uint8)}
    kastore.dump(data, tmp_path / "sizes.kas")
    assert main(["ls", "-lH", str(tmp_path / "sizes.kas")]) == 0
    assert capsys.readouterr().out == "float64    1000 7.8K big\nuint8   3145728 3.0M huge\n"


@pytest.mark.parametrize("options", [[], ["-l"], ["-lH"]])
def test_ls_of_an_empty_store_prints_nothing(
    tmp_path: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    kastore.dump({}, tmp_path / "empty.kas")
    assert main(["ls", *options, str(tmp_path / "empty.kas")]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("key", "expected"),
    [("one", "0\n1\n2\n3\n4\n"), ("two", "0\n1\n2\n3\n4\n")],
)
def test_dump_prints_one_value_per_line(
    docs_example_file: Path, key: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dump", str(docs_example_file), key]) == 0
    assert capsys.readouterr() == (expected, "")


def test_dump_of_floats_and_odd_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {"a b/é": np.array([0.5772, -2.5, np.inf]), "none": np.array([], dtype=np.int8)}
    kastore.dump(data, tmp_path / "f.kas")
    assert main(["dump", str(tmp_path / "f.kas"), "a b/é"]) == 0
    assert main(["dump", str(tmp_path / "f.kas"), "none"]) == 0
    assert capsys.readouterr() == ("0.5772\n-2.5\ninf\n", "")


@pytest.mark.parametrize("option", ["-V", "--version"])
def test_version(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([option]) == 0
    assert capsys.readouterr() == (f"kastore {kastore.__version__}\n", "")


@pytest.mark.parametrize("verbose", [["-v"], ["-vv"], ["-v", "-v"]])
def test_verbose_changes_nothing_on_stdout(
    docs_example_file: Path, verbose: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*verbose, "ls", "-lH", str(docs_example_file)]) == 0
    assert capsys.readouterr().out == DOCS_LS_LH


@pytest.mark.parametrize(
    "argv",
    [[], ["ls"], ["dump", "file-only"], ["frobnicate", "x"], ["ls", "-x", "f"]],
    ids=repr,
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: kastore" in captured.err


def _assert_one_line_error(path: Path, capsys: pytest.CaptureFixture[str], *words: str) -> None:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"kastore: {path}: ")
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    for word in words:
        assert word in captured.err


@pytest.mark.parametrize("command", [["ls"], ["ls", "-lH"], ["dump"]])
def test_a_missing_file(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing.kas"
    key = ["one"] if command == ["dump"] else []
    assert main([*command, str(path), *key]) == 1
    _assert_one_line_error(path, capsys, "No such file")


@pytest.mark.parametrize(
    ("contents", "words"),
    [
        (b"not a kastore file at all, but long enough to have a header; " * 2, ["magic"]),
        (b"", ["empty"]),
        (b"\x89KAS\r\n\x1a\n", ["truncated"]),
        (header_bytes(0, 64, major=2), ["too new"]),
        (header_bytes(0, 64, major=0), ["too old"]),
        (header_bytes(2**32 - 1, 100) + bytes(36), ["size"]),
    ],
    ids=["bad-magic", "empty", "truncated", "too-new", "too-old", "huge-item-count"],
)
def test_a_malformed_file(
    tmp_path: Path, contents: bytes, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.kas"
    path.write_bytes(contents)
    assert main(["ls", "-l", str(path)]) == 1
    _assert_one_line_error(path, capsys, *words)


def test_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(tmp_path)]) == 1
    _assert_one_line_error(tmp_path, capsys, "directory")


def test_dump_of_an_unknown_key(
    docs_example_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dump", str(docs_example_file), "three"]) == 1
    _assert_one_line_error(docs_example_file, capsys, "'three'")


def test_python_dash_m_kastore(docs_example_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kastore", "ls", "-lH", docs_example_file.name],
        cwd=docs_example_file.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, DOCS_LS_LH, "")


def test_python_dash_m_kastore_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.kas").write_bytes(b"\x00" * 64)
    result = subprocess.run(
        [sys.executable, "-m", "kastore", "-v", "ls", "bad.kas"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("kastore: bad.kas: bad magic number")
    assert "Traceback" not in result.stderr


# --- the reference command line's names, for code written against it ------------


def test_the_reference_parser_names_and_runners(
    docs_example_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kastore.cli import get_kastore_parser

    args = get_kastore_parser().parse_args(["ls", "-l", "-H", str(docs_example_file)])
    assert (args.store, args.long, args.human_readable) == (str(docs_example_file), True, True)
    args.runner(args)
    args = get_kastore_parser().parse_args(["dump", str(docs_example_file), "two"])
    assert (args.store, args.array) == (str(docs_example_file), "two")
    args.runner(args)
    assert capsys.readouterr() == (DOCS_LS_LH + "0\n1\n2\n3\n4\n", "")


def test_a_runner_raises_what_main_reports(tmp_path: Path) -> None:
    from kastore.cli import get_kastore_parser

    (tmp_path / "empty.kas").write_bytes(b"")
    args = get_kastore_parser().parse_args(["ls", str(tmp_path / "empty.kas")])
    with pytest.raises(EOFError):
        args.runner(args)


def test_kastore_main_returns_on_success_and_exits_with_the_status_on_failure(
    docs_example_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kastore.cli import kastore_main

    monkeypatch.setattr(sys, "argv", ["kastore", "ls", str(docs_example_file)])
    kastore_main()  # returns, as the reference's does
    assert capsys.readouterr().out == "one\ntwo\n"
    monkeypatch.setattr(sys, "argv", ["kastore", "ls", str(docs_example_file.parent / "no")])
    with pytest.raises(SystemExit) as exit_:
        kastore_main()
    assert exit_.value.code == 1


def test_verbose_log_lines_are_timestamped_on_stderr(docs_example_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kastore", "-v", "ls", docs_example_file.name],
        cwd=docs_example_file.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "one\ntwo\n")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} tmp\.kas: 2 keys\n", result.stderr)
