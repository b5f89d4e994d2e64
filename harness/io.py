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


@contextlib.contextmanager
def atomic_writer(path: str | Path):
    """A binary file to write ``path`` through crash-safely: a temporary file in the same folder,
    fsync, then ``os.replace`` when the block ends; on any error the old file stays and the temporary
    one is removed. Streamed, so a large object (a checkpoint) need not be built in memory first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


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


def try_lock(path: str | Path) -> int | None:
    """An exclusive ``flock`` on ``path`` without waiting: the open descriptor (closing it, or the
    holder's death however it dies, releases the lock), or None while another process holds it.
    Other errors (a filesystem without locks) are raised. The file is created readable and writable
    by everyone (several users' runs share node-wide locks); an existing file is opened without
    O_CREAT, which systemd's fs.protected_regular refuses for another user's file in /tmp."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            os.fchmod(fd, 0o666)  # whatever the umask
        except FileExistsError:  # created by another process meanwhile
            fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str, wait_s: float = 60.0):
    """Hold an exclusive lock on ``path`` (fcntl; released by the kernel when the holder dies).

    Waits up to ``wait_s`` for another holder (an orphan of a killed run finishing its batch), then
    fails naming the holder's pid.
    """
    import time

    from harness.errors import HarnessError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    fd = None
    while True:
        try:
            fd = try_lock(path)
        except OSError as err:  # a filesystem without locks
            import logging

            logging.getLogger(__name__).warning("cannot lock %s (%s); going on without the lock", path, err.strerror)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fd is not None:
            break
        if time.monotonic() > deadline:
            holder = path.read_text().strip() or "?"
            raise HarnessError(f"{what} is locked by another process ({holder}, lock {path}); wait for it to "
                               f"finish or kill it, then rerun")
        time.sleep(0.5)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
