"""Content digests of weight files, cached so a multi-GB checkpoint is hashed once per machine.

Only the files a loader reads are hashed (:mod:`models.layouts` names them). The cache holds one
small entry per file, keyed by (absolute path, size, mtime), and a file is hashed under an exclusive
lock, so parallel jobs that start on the same checkpoint hash it once between them and no job's
entry is lost to another's write.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterable

from harness.io import sha256_file


def cache_dir() -> Path:
    root = Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "cogview3-harness"))
    return root / "sha256"


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (absolute path, size, mtime) so unchanged files are not re-read."""
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    entry = cache_dir() / f"{key}.sha256"
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock = open(entry.with_suffix(".lock"), "a")
    except OSError:
        return sha256_file(path)  # read-only home: hashing still works, just uncached
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second job waits here, then reads the first one's entry
        if entry.is_file():
            value = entry.read_text().strip()
            if len(value) == 64:
                return value
        value = sha256_file(path)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(value + "\n")
        os.replace(tmp, entry)
        return value


def files_digest(files: Iterable[Path], root: Path) -> str:
    """Digest over (name relative to ``root``, sha256) of the given files: what a weights entry provides."""
    root = Path(root)
    base = root if root.is_dir() else root.parent
    h = hashlib.sha256()
    for p in sorted(Path(f) for f in files):
        name = p.relative_to(base) if p.is_relative_to(base) else p
        h.update(f"{name}={file_sha256(p)}\n".encode())
    return h.hexdigest()[:16]


def load_checkpoint(path: Path):
    """``torch.load`` of a local, user-given checkpoint, memory-mapped where the format allows.

    Memory-mapping keeps the tensors in the file (no copy in host RAM until each is moved to its
    device). Files written before torch 1.6 (not zip archives) cannot be mapped and are read whole;
    files that also pickle other objects (SAT's argparse namespace) need the full unpickler.
    """
    import torch

    last = None
    for mmap in (True, False):
        for weights_only in (True, False):
            try:
                return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
            except Exception as err:  # torch raises RuntimeError/UnpicklingError/... by format
                last = err
    raise last
