"""Crash-safe file writes: write a temporary file in the same folder, fsync, then rename over."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from PIL import Image


def digest(obj: Any) -> str:
    """Stable short digest of a JSON-able object (fingerprints, cache keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str | Path, drop_damaged: bool = False) -> list[dict]:
    """Rows of a JSON-lines file. A damaged line is an error, or (``drop_damaged``, for append-only
    caches whose last line a crash may have cut short) dropped with a warning."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    if drop_damaged:
                        import logging

                        logging.getLogger(__name__).warning("dropping damaged line %d of the cache %s", n, path)
                        continue
                    from harness.errors import HarnessError

                    raise HarnessError(f"{path} line {n} is not valid JSON ({err}); the file is damaged: delete it to rebuild") from err
    return rows


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows to an append-only cache, first ending a line a crash cut short."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes()[-1:] == b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")


def records_csv(records: list[dict]) -> str:
    """CSV text of dict rows; the columns are every key, in first-seen order."""
    import csv

    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in records for k in r)) or ["empty"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG with no metadata (no timestamps), so equal pixels give equal bytes."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: Image.Image, path: str | Path) -> str:
    """Write ``image`` atomically as PNG and return the sha256 of the bytes written."""
    data = png_bytes(image)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str, wait_s: float = 60.0):
    """Hold an exclusive lock on ``path`` (fcntl; released by the kernel when the holder dies).

    Waits up to ``wait_s`` for another holder (an orphan of a killed run finishing its batch), then
    fails naming the holder's pid.
    """
    import fcntl
    import time

    from harness.errors import HarnessError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):  # a filesystem without fcntl locks
                    import logging

                    logging.getLogger(__name__).warning("cannot lock %s (%s); going on without the lock", path,
                                                        err.strerror)
                    break
                if time.monotonic() > deadline:
                    f.seek(0)
                    holder = f.read().strip() or "?"
                    raise HarnessError(f"{what} is locked by another process ({holder}, lock {path}); wait for it to "
                                       f"finish or kill it, then rerun") from None
                time.sleep(0.5)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
