"""Resuming a killed run with the same command: no ``--unlock`` to know about.

Snakemake locks its working directory while a run is under way and leaves the lock behind when the
run is killed (``kill -9``, an OOM kill, a lost node), so the next run stops with a LockException.
Its lock files do not say who holds them. The Snakefile therefore calls :func:`claim_run` in the
main process of every invocation: it takes an exclusive ``fcntl`` lock on
``.snakemake/harness-run.lock`` and holds it until the process exits (the kernel releases it when
the process dies, however it dies). Whoever gets that lock knows no other run of this workflow is
alive in the folder, so Snakemake locks found then are stale, and it removes them (what
``snakemake --unlock`` does). If the lock is taken, another run is alive and its locks are left
alone. Incomplete outputs of the killed run are rerun by ``rerun-incomplete`` in profiles/default;
the runner resumes generation from its state file, so no finished image is made twice.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_HELD = []  # the open lock file of this process (kept open: closing it releases the lock)


def claim_run(workdir: str | Path = ".") -> list[str]:
    """Hold the run lock of ``workdir`` and remove Snakemake locks no live run holds; returns notices."""
    state = Path(workdir) / ".snakemake"
    state.mkdir(parents=True, exist_ok=True)
    path = state / "harness-run.lock"
    f = open(path, "a+")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return []  # another run of this workflow is alive here: its locks are real
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    f.flush()
    _HELD.append(f)
    locks = state / "locks"
    stale = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    for p in stale:
        p.unlink()
    if stale:
        return [f"removed {len(stale)} stale Snakemake lock files from {locks}: the run that left them is gone "
                "(a killed run); this run resumes where it stopped"]
    return []
