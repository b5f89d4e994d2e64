"""One GPU per job on a local multi-GPU node.

Snakemake counts a ``gpu`` resource but assigns no device ids to local jobs (its issue #281), so
every job would see all GPUs and use ``cuda:0``. The harness therefore hands out GPUs itself:

- :func:`visible_gpus` lists the node's GPUs without importing torch: by UUID from ``nvidia-smi -L``
  (MIG slices where MIG is on), so a lock names one physical device whatever order or numbering a
  process sees; ``CUDA_VISIBLE_DEVICES`` (indices, read in PCI order, or UUIDs) restricts the list;
  ``HARNESS_GPU_IDS`` replaces it (tests fake a node with it; it may only narrow CUDA_VISIBLE_DEVICES).
- A job whose rule declares ``gpu=1`` takes one with :func:`acquire`: an exclusive ``flock`` on
  ``gpu-<id>.lock`` in a folder on local disk (``/tmp/harness-gpu-locks``, shared by every run on the
  node; ``HARNESS_GPU_LOCK_DIR`` moves it). The kernel drops the lock when the process exits, however
  it exits (SIGKILL included), so a crashed job never keeps a GPU; the files carry no state (the last
  holder's pid, for ``python -m harness gpus``).
- The job then sets ``CUDA_VISIBLE_DEVICES`` to it (and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) before
  torch is imported, so ``device: cuda`` (or ``auto``) means "the GPU this job was given".

Only a local Snakemake run turns the pool on: its ``onstart`` sets ``HARNESS_GPU_POOL`` (and the
``gpu`` resource to the number of GPUs), and each GPU rule runs its command with
``HARNESS_JOB_GPUS={resources.gpu}``. Jobs under a scheduler (SLURM) are given their GPU by it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import HarnessError
from harness.io import try_lock

#: comma-separated GPU ids the pool hands out instead of the ones it finds (tests fake a 4-GPU node
#: with it; on a real node it chooses some GPUs; within CUDA_VISIBLE_DEVICES when that is set)
IDS_ENV = "HARNESS_GPU_IDS"
#: set by a local run's onstart (harness/gpus.py is on): the lock folder; not for users to set
POOL_ENV = "HARNESS_GPU_POOL"
#: how many GPUs the job's rule declared (the GPU rules put `HARNESS_JOB_GPUS={resources.gpu}` before their command)
JOB_GPUS_ENV = "HARNESS_JOB_GPUS"
#: where the node's lock files are: local disk (flock over NFS is not reliable), the same for every
#: run and user on the node, so two runs never share a GPU either
LOCK_DIR_ENV = "HARNESS_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/harness-gpu-locks")
_UUID = re.compile(r"\(UUID: ((?:GPU|MIG)-[^)]+)\)")


def _ids(value: str) -> list[str]:
    ids = [i.strip() for i in value.split(",") if i.strip()]
    # CUDA stops at the first invalid id (-1 hides every GPU)
    return ids[: next((n for n, i in enumerate(ids) if i.startswith("-")), len(ids))]


def nvidia_smi_devices() -> list[str]:
    """The node's devices by UUID in nvidia-smi's (PCI) order; a GPU in MIG mode gives its slices."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    gpus: list[tuple[str, list[str]]] = []
    for line in out.stdout.splitlines():
        uuid = _UUID.search(line)
        if not uuid:
            continue
        if uuid.group(1).startswith("GPU-"):
            gpus.append((uuid.group(1), []))
        elif gpus:
            gpus[-1][1].append(uuid.group(1))
    return [d for gpu, slices in gpus for d in (slices or [gpu])]


def visible_gpus() -> list[str]:
    """The GPU ids jobs of this run may use, without importing torch (CUDA must not start before a
    job has set CUDA_VISIBLE_DEVICES)."""
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    allowed = None if cuda_visible is None else _ids(cuda_visible)
    if os.environ.get(IDS_ENV) is not None:
        ids = _ids(os.environ[IDS_ENV])
        if allowed is not None and not set(ids) <= set(allowed):
            raise HarnessError(f"{IDS_ENV}={os.environ[IDS_ENV]} names GPUs outside CUDA_VISIBLE_DEVICES="
                               f"{cuda_visible}; choose among those (it may only narrow them)")
        return ids
    devices = nvidia_smi_devices()
    if allowed is None:
        return devices
    # indices are positions in PCI order (the order nvidia-smi lists; jobs get CUDA_DEVICE_ORDER=PCI_BUS_ID)
    return [devices[int(i)] if i.isdigit() and int(i) < len(devices) else i for i in allowed]


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def lock_path(folder: Path, gpu: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu)  # ids are GPU-<uuid> / MIG-<uuid>
    return Path(folder) / f"gpu-{safe}.lock"


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


def prepare_lock_dir(folder: Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder == DEFAULT_LOCK_DIR and folder.stat().st_uid == os.getuid():
            os.chmod(folder, 0o1777)  # like /tmp: every user may add locks, none may remove another's
    except OSError as err:
        raise HarnessError(f"GPU pool: cannot use the lock folder {folder} ({err}); set {LOCK_DIR_ENV} "
                           "to a writable folder on local disk") from err
    return folder


def acquire(ids: list[str], folder: Path, poll_s: float = 0.2, timeout_s: float | None = None,
            on_wait: Callable[[], None] | None = None) -> GpuLease:
    """Take a free id of ``ids`` (waiting until one is free): an exclusive flock on its lock file.

    The search starts at an offset given by the pid, so jobs started together spread over the GPUs
    instead of all trying id 0 first."""
    if not ids:
        raise HarnessError("GPU pool: no GPU ids to hand out")
    folder = prepare_lock_dir(folder)
    start, waited_note = time.monotonic(), False
    offset = os.getpid() % len(ids)
    while True:
        for gpu in ids[offset:] + ids[:offset]:
            path = lock_path(folder, gpu)
            fd = try_lock(path)
            if fd is not None:
                holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode() + b"\n", 0)
                return GpuLease(gpu, fd, path, time.monotonic() - start)
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise HarnessError(f"GPU pool: no GPU of {','.join(ids)} became free within {timeout_s:.0f} s "
                               f"(locks in {folder}; `python -m harness gpus` lists their holders)")
        if on_wait is not None and not waited_note:
            on_wait()
            waited_note = True
        time.sleep(poll_s)


def pool_status(ids: list[str], folder: Path) -> list[dict[str, Any]]:
    """Per id: whether it is held now, and by whom (the holder's pid, host and start time)."""
    rows = []
    for gpu in ids:
        path = lock_path(folder, gpu)
        held, holder = False, None
        if path.exists():
            fd = try_lock(path)
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
def wants_pool() -> bool:
    """Whether this process is a job of a local run with the pool on whose rule declared a GPU."""
    try:
        declared = int(os.environ.get(JOB_GPUS_ENV) or 0)
    except ValueError:
        declared = 0
    return bool(os.environ.get(POOL_ENV)) and declared >= 1


@contextmanager
def job_gpu(log: Callable[[str], None]) -> Iterator[GpuLease | None]:
    """Hold one GPU of the node for the duration of the block, with ``CUDA_VISIBLE_DEVICES`` set to
    it; None (nothing held, nothing set) when the node has no GPU."""
    ids = visible_gpus()
    if not ids:
        yield None
        return
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_initialized():  # CUDA read CUDA_VISIBLE_DEVICES already: setting it now does nothing
            raise HarnessError("GPU pool: CUDA was initialised in this process before the job took its GPU, so "
                               "it would see every GPU; run the command in a fresh process (HARNESS_PRELOAD=0 "
                               "turns the preload server off)")
    folder = Path(os.environ.get(POOL_ENV) or lock_dir())
    lease = acquire(ids, folder, on_wait=lambda: log(f"gpu: all of {','.join(ids)} are busy; waiting for one"))
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = lease.gpu
    when = "after torch was imported, before CUDA started" if "torch" in sys.modules else "before torch was imported"
    log(f"gpu: this job holds GPU {lease.gpu} of {','.join(ids)}; CUDA_VISIBLE_DEVICES={lease.gpu} set {when} "
        f"(waited {lease.waited_s:.1f} s; lock {lease.path})")
    try:
        yield lease
    finally:
        lease.release()
