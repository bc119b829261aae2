"""The README's Python examples of reading over HTTP run as written against the app."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import kastore.remote as remote

from .conftest import Live

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python, over HTTP", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, "the README's HTTP section should have two Python examples"
    return blocks


def test_the_readme_examples_run(
    live: Live, tskit_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_url, client = (block.replace("http://localhost:8000", live.url) for block in _examples())
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(tskit_file, tmp_path / "sim.trees")
    with remote.connect(live.url) as service:
        service.replace(tmp_path / "sim.trees", "sim", progress=False)
        namespace: dict[str, object] = {}
        exec(load_url, namespace)
        assert namespace["left"].dtype == "float64"  # type: ignore[attr-defined]
        service.delete("sim")
        exec(client, {})
        assert "sim" not in service
