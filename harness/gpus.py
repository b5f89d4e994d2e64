"""One GPU per job on a local multi-GPU node.

Snakemake counts a ``gpu`` resource but assigns no device ids to local jobs (its issue #281), so
every job would see all GPUs and use ``cuda:0``. The harness therefore hands out ids itself:

- :func:`visible_gpus` lists the node's GPU ids without importing torch (``HARNESS_GPU_IDS`` when
  set, else ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi``).
- A job that will run on a GPU takes one with :func:`acquire`: an exclusive ``flock`` on the file
  ``gpu-<id>.lock`` in a folder on local disk. The kernel drops the lock when the process exits,
  however it exits (SIGKILL included), so a crashed job never leaves an id taken; the files
  themselves carry no state (the last holder's pid, for ``python -m harness gpus``).
- The job then sets ``CUDA_VISIBLE_DEVICES`` to that id before torch is imported, so ``device: cuda``
  (or ``auto``) means "the GPU this job was given" and the process cannot touch the others.

The Snakefile turns the pool on for local runs (it sets ``HARNESS_GPU_POOL`` to the lock folder and
the ``gpu`` resource to the number of ids, so Snakemake never starts more GPU jobs than there are
GPUs). Jobs under a scheduler (SLURM) are given their GPU by it and do not use the pool.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import HarnessError

#: comma-separated GPU ids the pool hands out instead of the ones it finds (tests fake a 4-GPU node
#: with it; on a real node it restricts a run to some GPUs, like CUDA_VISIBLE_DEVICES)
IDS_ENV = "HARNESS_GPU_IDS"
#: set (to the lock folder) by the Snakefile for local runs: jobs take their GPU from the pool
POOL_ENV = "HARNESS_GPU_POOL"
#: the lock folder of the node; local disk (flock over NFS is not reliable), shared by every run
#: on the node so that two runs never share a GPU either
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "harness-gpu-locks"
#: the harness commands that load a model (the rules that declare ``gpu=1``)
GPU_COMMANDS = ("generate", "score", "timecost", "scorer-speed")


def visible_gpus() -> list[str]:
    """The GPU ids jobs on this node may use, without importing torch (CUDA must not start before
    a job has set CUDA_VISIBLE_DEVICES)."""
    for env in (IDS_ENV, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(env)
        if value is not None:
            ids = [i.strip() for i in value.split(",") if i.strip()]
            # CUDA stops at the first invalid id (-1 hides every GPU)
            return ids[: next((n for n, i in enumerate(ids) if i.startswith("-")), len(ids))]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def lock_path(lock_dir: Path, gpu: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu)  # ids may be GPU-<uuid> / MIG-<uuid>
    return Path(lock_dir) / f"gpu-{safe}.lock"


@dataclass
class GpuLease:
    """A GPU id this process holds until :meth:`release` or its exit."""

    gpu: str
    fd: int
    path: Path
    waited_s: float

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def _open_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)  # other users' runs on the node take the same locks
    except PermissionError:
        pass
    return fd


def _try_lock(path: Path) -> int | None:
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def prepare_lock_dir(lock_dir: Path) -> Path:
    lock_dir = Path(lock_dir)
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        if lock_dir.stat().st_uid == os.getuid():
            os.chmod(lock_dir, 0o1777)  # like /tmp: every user may add locks, none may remove another's
    except OSError as err:
        raise HarnessError(f"GPU pool: cannot use the lock folder {lock_dir} ({err}); "
                           f"set {POOL_ENV} to a writable folder on local disk") from err
    return lock_dir


def acquire(ids: list[str], lock_dir: Path, poll_s: float = 0.2, timeout_s: float | None = None,
            on_wait: Callable[[], None] | None = None) -> GpuLease:
    """Take a free id of ``ids`` (waiting until one is free): an exclusive flock on its lock file.

    The search starts at an offset given by the pid, so jobs started together spread over the GPUs
    instead of all trying id 0 first."""
    if not ids:
        raise HarnessError("GPU pool: no GPU ids to hand out")
    lock_dir = prepare_lock_dir(lock_dir)
    start, waited_note = time.monotonic(), False
    offset = os.getpid() % len(ids)
    while True:
        for gpu in ids[offset:] + ids[:offset]:
            path = lock_path(lock_dir, gpu)
            fd = _try_lock(path)
            if fd is not None:
                holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode() + b"\n", 0)
                return GpuLease(gpu, fd, path, time.monotonic() - start)
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise HarnessError(f"GPU pool: no GPU of {','.join(ids)} became free within {timeout_s:.0f} s "
                               f"(locks in {lock_dir}; `python -m harness gpus` lists their holders)")
        if on_wait is not None and not waited_note:
            on_wait()
            waited_note = True
        time.sleep(poll_s)


def pool_status(ids: list[str], lock_dir: Path) -> list[dict[str, Any]]:
    """Per id: whether it is held now, and by whom (the holder's pid, host and start time)."""
    rows = []
    for gpu in ids:
        path = lock_path(lock_dir, gpu)
        held, holder = False, None
        if path.exists():
            fd = _try_lock(path)
            held = fd is None
            if fd is not None:
                os.close(fd)
            try:
                holder = json.loads(path.read_text() or "null")
            except (OSError, ValueError):
                holder = None
        rows.append({"gpu": gpu, "held": held, "holder": holder if held else None})
    return rows


# ---- a job's GPU ----------------------------------------------------------------------------------
def configured_device(argv: list[str]) -> str:
    """The ``device`` of the config a harness command line names (``--config-snapshot`` or ``--config``)."""
    for flag in ("--config-snapshot", "--config"):
        if flag in argv[:-1]:
            path = Path(argv[argv.index(flag) + 1])
            try:
                import yaml

                return str((yaml.safe_load(path.read_text()) or {}).get("device", "auto"))
            except (OSError, ValueError):
                return "auto"  # the command itself reports the unreadable file
    return "auto"


def wants_pool(argv: list[str]) -> bool:
    """Whether this command line should take a GPU from the pool: a model-loading command in a run
    that turned the pool on, whose device is a GPU "given to the job" (``auto`` or ``cuda``; ``cpu``
    needs none, and ``cuda:N`` pins every job to GPU N on purpose)."""
    return (bool(argv) and argv[0] in GPU_COMMANDS and bool(os.environ.get(POOL_ENV))
            and configured_device(argv) in ("auto", "cuda"))


@contextmanager
def job_gpu(log: Callable[[str], None]) -> Iterator[GpuLease | None]:
    """Hold one GPU of the node for the duration of the block, with ``CUDA_VISIBLE_DEVICES`` set to
    it; None (nothing held, nothing set) when the node has no GPU."""
    ids = visible_gpus()
    if not ids:
        yield None
        return
    lock_dir = Path(os.environ.get(POOL_ENV) or DEFAULT_LOCK_DIR)
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_initialized():  # CUDA read CUDA_VISIBLE_DEVICES already: setting it now does nothing
            raise HarnessError("GPU pool: CUDA was initialised before this job took its GPU")
    lease = acquire(ids, lock_dir, on_wait=lambda: log(f"gpu: all of {','.join(ids)} are busy; waiting for one"))
    os.environ["CUDA_VISIBLE_DEVICES"] = lease.gpu
    when = "after torch was imported, before CUDA started" if "torch" in sys.modules else "before torch was imported"
    log(f"gpu: this job holds GPU {lease.gpu} of {','.join(ids)}; CUDA_VISIBLE_DEVICES={lease.gpu} set {when} "
        f"(waited {lease.waited_s:.1f} s; lock {lease.path})")
    try:
        yield lease
    finally:
        lease.release()
