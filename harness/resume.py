"""Resuming a killed run with the same command: no ``--unlock`` to know about.

Snakemake locks its working directory while a run is under way and leaves the lock behind when the
run is killed (``kill -9``, an OOM kill, a lost node), so the next run stops with a LockException.
Its lock files do not say who holds them. So every run of this workflow that executes jobs calls
:func:`claim_run` while the Snakefile is read: it takes an exclusive ``fcntl`` lock on
``.snakemake/harness-run.lock`` and holds it until the process exits (the kernel releases it when
the process dies, however it dies).

- Got it: no other run is alive in this folder. Snakemake locks found now are stale and are removed
  (what ``snakemake --unlock`` does), and processes the dead run left behind on this host (its jobs
  keep running when only the Snakemake process was killed) are stopped, so they cannot write beside
  the jobs that resume their work.
- Not got: another run is alive here, and this one stops with its pid. One executing run per results
  folder: the start-of-run integrity check moves files, which must not happen under a live run.

Dry runs and other invocations that execute nothing (``-n``, ``--unlock``, ``--lint``, ``--report``,
...) neither claim nor change anything. Incomplete outputs of the killed run are rerun by
``rerun-incomplete`` in profiles/default; the runner resumes generation from its state file, so no
finished image is made twice.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import time
from pathlib import Path

from harness.errors import HarnessError

_HELD = []  # the open lock file of this process (kept open: closing it releases the lock)

#: Snakemake options under which it executes no job (its Snakefile is still read)
NOT_EXECUTING = ("--dry-run", "--dryrun", "--unlock", "--lint", "--summary", "--detailed-summary", "--report",
                 "--dag", "--rulegraph", "--filegraph", "--d3dag", "--list-rules", "--list", "--list-target-rules",
                 "--list-changes", "--list-input-changes", "--list-params-changes", "--list-code-changes",
                 "--list-version-changes", "--list-untracked", "--print-compilation", "--cleanup-metadata",
                 "--cleanup-shadow", "--archive", "--delete-all-output", "--delete-temp-output", "--touch",
                 "--containerize", "--export-cwl", "--generate-unit-tests", "--conda-create-envs-only",
                 "--conda-cleanup-envs", "--cleanup-containers", "--version", "--help")


def executes(argv: list[str]) -> bool:
    """Whether a Snakemake command line runs jobs (its Snakefile is read before Snakemake itself
    knows, so ``workflow.dryrun`` cannot tell yet)."""
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg.split("=", 1)[0] in NOT_EXECUTING:
            return False
        # short flags, also combined: -n, -np, -nF (values are separate words in practice)
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].isalpha() and ("n" in arg[1:] or "h" in arg[1:]):
            return False
    return True


def _process_group(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def processes_in(workdir: str | Path, pgid: int | None = None) -> list[int]:
    """Live processes (not this one) working in ``workdir``, only those of process group ``pgid`` if
    given (a recycled group id of an unrelated program works elsewhere and is left alone)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        if pgid is not None and _process_group(int(p.name)) != pgid:
            continue
        try:
            if Path(os.readlink(p / "cwd")).resolve() == Path(workdir).resolve():
                out.append(int(p.name))
        except OSError:
            pass
    return out


def send_signal(pids, sig: int) -> None:
    """Send ``sig`` to each of ``pids``; a process already gone is skipped."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Wait until killed processes have exited (a zombie counts as gone: it holds no locks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(pid)
        if not alive:
            return
        time.sleep(0.05)


def claim_run(workdir: str | Path = ".") -> list[str]:
    """Hold the run lock of ``workdir``; clean up after a dead run; returns notices.

    Raises :class:`HarnessError` when another run is alive in the folder.
    """
    workdir = Path(workdir)
    state = workdir / ".snakemake"
    state.mkdir(parents=True, exist_ok=True)
    path = state / "harness-run.lock"
    f = open(path, "a+")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        if err.errno in (errno.EACCES, errno.EAGAIN):
            raise HarnessError(f"another run of this workflow is alive in {workdir.resolve()} ({holder or 'pid ?'}); "
                               "wait for it to finish (one run per results folder), or stop it and rerun") from None
        return [f"cannot lock {path} ({err.strerror}: the filesystem has no fcntl locks); stale Snakemake locks are "
                "not removed automatically here: after a killed run, run `snakemake --unlock` once"]
    f.seek(0)
    previous = f.read().split()
    notices = []
    # "pid P pgid G host H": stop what the dead run left running (its jobs, when only Snakemake died)
    if len(previous) >= 6 and previous[5] == socket.gethostname() and previous[3].isdigit():
        pgid = int(previous[3])
        if pgid != os.getpgid(0):
            left = processes_in(workdir, pgid)
            send_signal(left, signal.SIGKILL)
            _wait_gone(left)  # their locks (a generation shard's) are free once they are gone
            if left:
                notices.append(f"stopped {len(left)} processes the killed run (pid {previous[1]}) left running")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} pgid {os.getpgid(0)} host {socket.gethostname()}\n")
    f.flush()
    _HELD.append(f)
    locks = state / "locks"
    stale = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    for p in stale:
        p.unlink()
    if stale:
        notices.append(f"removed {len(stale)} stale Snakemake lock files from {locks}: the run that left them is gone "
                       "(a killed run); this run resumes where it stopped")
    return notices
