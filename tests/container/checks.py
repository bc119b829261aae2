"""The checks behind tests/container/run.sh, one subcommand each.

Standard library only: this runs on the host's python3, outside any venv.
Each subcommand prints what it found and exits 1 with a message saying what
it expected and what it got.

    checks.py free-port
    checks.py upload ANSWER.json NAME
    checks.py keys KEYS.json MANIFEST.json FILE BASE_URL CURL_CONFIG OUT_DIR
    checks.py arrays KEYS.json MANIFEST.json FILE OUT_DIR
    checks.py stores STORES.json NAME...
    checks.py server-pid PID
    checks.py server-uid PID
    checks.py data-dir DATA_DIR UID FILE...
    checks.py healthcheck DOCKERFILE
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import socket
import sys
from pathlib import Path
from typing import Any


class CheckFailed(Exception):
    pass


def fail(message: str) -> None:
    raise CheckFailed(message)


def load(path: str) -> Any:
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except ValueError as err:
        raise CheckFailed(f"{path}: expected JSON, got {text[:300]!r}") from err


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def out_name(index: int) -> str:
    return f"{index:04d}.bin"


def free_port() -> None:
    """A port nothing listens on now (the container shares the host's network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def upload(answer_path: str, name: str) -> None:
    answer = load(answer_path)
    if answer.get("name") != name:
        fail(f"upload answer: expected name {name!r}, got {answer.get('name')!r} in {answer}")
    print(f"  stored as {answer['name']!r}: {answer.get('num_keys')} keys, {answer.get('size')} B")


def _expected_keys(manifest_path: str, file_name: str) -> dict[str, Any]:
    manifest = load(manifest_path)
    if file_name not in manifest:
        fail(f"{manifest_path} has no entry for {file_name}")
    keys: dict[str, Any] = manifest[file_name]["keys"]
    return keys


def keys(
    keys_path: str, manifest_path: str, file_name: str, base_url: str, config: str, out_dir: str
) -> None:
    """Compare the key listing with the manifest; write a curl config fetching every array."""
    listing = load(keys_path)
    expected = _expected_keys(manifest_path, file_name)
    got = {entry["key"]: entry for entry in listing["keys"]}
    if set(got) != set(expected):
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        fail(f"keys of {file_name}: missing {missing}, unexpected {extra}")
    for key, want in expected.items():
        entry = got[key]
        for field in ("dtype", "length"):
            if entry[field] != want[field]:
                fail(f"{file_name} {key}: expected {field} {want[field]!r}, got {entry[field]!r}")
    lines = []
    for index, entry in enumerate(listing["keys"]):
        lines.append(f'url = "{base_url}{entry["url"]}"')
        lines.append(f'output = "{Path(out_dir) / out_name(index)}"')
    # The README's claim: a key can be used in the URL as it is, slashes and all.
    if "edges/left" in got:
        lines.append(f'url = "{base_url}/stores/{listing["store"]}/arrays/edges/left"')
        lines.append(f'output = "{Path(out_dir) / "edges-left-as-is.bin"}"')
    Path(config).write_text("\n".join(lines) + "\n")
    print(f"  {len(got)} keys, dtypes and lengths as in the manifest")


def arrays(keys_path: str, manifest_path: str, file_name: str, out_dir: str) -> None:
    """Every downloaded array's sha256 against the manifest."""
    listing = load(keys_path)
    expected = _expected_keys(manifest_path, file_name)
    bad = []
    for index, entry in enumerate(listing["keys"]):
        key = entry["key"]
        path = Path(out_dir) / out_name(index)
        if not path.exists():
            bad.append(f"{key}: not downloaded ({entry['url']})")
            continue
        got = sha256_file(path)
        if got != expected[key]["sha256"]:
            bad.append(f"{key}: expected sha256 {expected[key]['sha256']}, got {got}")
        elif path.stat().st_size != entry["size"]:
            bad.append(f"{key}: expected {entry['size']} B as listed, got {path.stat().st_size}")
    as_is = Path(out_dir) / "edges-left-as-is.bin"
    if "edges/left" in expected:
        if not as_is.exists():
            bad.append("edges/left: not downloaded by its literal path")
        elif sha256_file(as_is) != expected["edges/left"]["sha256"]:
            bad.append("edges/left by its literal path: sha256 differs from the manifest")
    if bad:
        fail(f"{len(bad)} arrays of {file_name} differ:\n    " + "\n    ".join(bad))
    print(f"  {len(listing['keys'])} arrays downloaded, every sha256 as in the manifest")


def stores(stores_path: str, *names: str) -> None:
    listing = load(stores_path)
    got = sorted(store["name"] for store in listing["stores"])
    if got != sorted(names):
        fail(f"GET /stores: expected {sorted(names)}, got {got}")
    print(f"  stores: {got}")


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _server_pids(root_pid: str) -> list[int]:
    """The `python -m app` processes started under ROOT_PID."""
    children = _children()
    todo, found = [int(root_pid)], []
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # Not buildah's own process, whose arguments end with the same command.
        if Path(argv[0].decode()).name.startswith("python") and argv[1:3] == [b"-m", b"app"]:
            found.append(pid)
    if len(found) != 1:
        fail(f"expected one `python -m app` process under process {root_pid}, found {found}")
    return found


def server_pid(root_pid: str) -> None:
    print(_server_pids(root_pid)[0])


def server_uid(root_pid: str) -> None:
    """The uids of the server process, seen from the host."""
    pid = _server_pids(root_pid)[0]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    assert uids is not None
    real, effective, saved, fs = (int(u) for u in uids.group(1).split())
    if 0 in (real, effective, saved, fs):
        fail(f"server process {pid} runs as root: Uid {real} {effective} {saved} {fs}")
    print(f"  server process {pid}: uid {effective} (real, saved and fs uids non-zero too)")


def data_dir(path: str, uid: str, *files: str) -> None:
    """The uploads are in the mounted directory, byte for byte, owned by the service's uid."""
    root = Path(path)
    stored = [p for p in root.rglob("*") if p.is_file()]
    if not stored:
        fail(f"{path} is empty: nothing was written to the mounted data directory")
    not_owned = [str(p.relative_to(root)) for p in stored if p.stat().st_uid != int(uid)]
    if not_owned:
        fail(f"files in {path} not owned by uid {uid}: {not_owned}")
    digests = {sha256_file(p) for p in stored}
    for file in files:
        if sha256_file(Path(file)) not in digests:
            fail(f"no file in {path} has the bytes of {file}")
    names = sorted(str(p.relative_to(root)) for p in stored)
    print(f"  {len(stored)} files, all owned by uid {uid}, uploads found byte for byte: {names}")


def healthcheck(dockerfile: str) -> None:
    """Print the HEALTHCHECK's exec-form command, shell-quoted, for `run exec`."""
    text = re.sub(r"\\\n", " ", Path(dockerfile).read_text())
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.M)
    if not match:
        fail(f'{dockerfile}: no HEALTHCHECK ... CMD ["...", ...] line')
        return
    print(shlex.join(json.loads(match.group(1))))


COMMANDS = {
    "free-port": free_port,
    "upload": upload,
    "keys": keys,
    "arrays": arrays,
    "stores": stores,
    "server-pid": server_pid,
    "server-uid": server_uid,
    "data-dir": data_dir,
    "healthcheck": healthcheck,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        COMMANDS[argv[0]](*argv[1:])  # type: ignore[operator]
    except CheckFailed as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1
    except (KeyError, TypeError) as err:
        print(f"FAIL: {argv[0]}: an answer lacks the expected field {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
