"""Content digests of weight files and folders, cached so a multi-GB checkpoint is hashed once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".txt", ".model")


def _cache_path() -> Path:
    root = Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "cogview3-harness"))
    return root / "sha256-cache.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (absolute path, size, mtime) so unchanged files are not re-read."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = _cache_path()
    cache: dict[str, str] = {}
    if cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}  # a corrupt cache only costs a re-hash
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    cache[key] = h.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # read-only home: hashing still works, just uncached
    return cache[key]


def folder_digest(path: Path) -> str:
    """Digest over (relative name, sha256) of every weight/config file under a folder (or one file)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)[:16]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path)}={file_sha256(p)}\n".encode())
    return h.hexdigest()[:16]
