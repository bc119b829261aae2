"""The README's C example compiles against get_include() and prints what it says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kastore

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_c_example_builds_and_runs(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    program = re.search(r"```c\n(/\* example\.c.*?)```", text, re.S)
    output = re.search(r"\$ \./example\n(.*?)\n```", text, re.S)
    assert program and output, "the README has no C example with its output"
    compiler = shutil.which("cc")
    assert compiler, "no C compiler (cc) on PATH: the C API cannot be tested"
    (tmp_path / "example.c").write_text(program.group(1), encoding="utf-8")
    include = kastore.get_include()
    subprocess.run(
        [
            compiler,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{include}",
            "example.c",
            f"{include}/kastore.c",
            "-o",
            "example",
        ],
        cwd=tmp_path,
        check=True,
    )
    result = subprocess.run(["./example"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout == output.group(1) + "\n"
    with kastore.load(tmp_path / "example.kas") as store:
        assert store["nodes/time"].tolist() == [0.0, 1.5, 3.25]
