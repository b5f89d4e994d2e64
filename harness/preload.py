"""Pay the import cost of torch, diffusers, transformers and open_clip once per run, not per job.

A generation or scoring job spends most of a smoke-profile job importing those libraries (about
6.5 s of a 10 s CogView3 job on 2 cores: diffusers' subpackages import every model class eagerly).
With many small jobs on one machine, ``python -m harness preload-server`` imports them once and
then forks a child per job: the job's command line still runs ``python -m harness generate ...``,
whose CLI hands its arguments, working directory, environment and standard streams (the job's log)
to the server over a Unix socket and waits for the child's exit status. The child runs exactly the
code the command would run in a process of its own; only the already-imported third-party modules
are shared (harness and models code is imported fresh in each child).

The Snakefile starts the server for local runs and points ``HARNESS_PRELOAD_SOCKET`` at it; where
the variable is unset or nobody listens (cluster jobs, a hand-run command), the command runs in its
own process as before. The server never touches a GPU, so children initialise CUDA themselves (with
the ``CUDA_VISIBLE_DEVICES`` of their job).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

SOCKET_ENV = "HARNESS_PRELOAD_SOCKET"
#: the commands worth forking: the ones that import the heavy libraries
COMMANDS = ("generate", "score", "distill", "distill-generate")
#: what the server imports before it serves (third-party only, so children see current harness code)
PRELOAD = (
    "torch",
    "diffusers",
    "diffusers.models.unets",
    "diffusers.models.autoencoders",
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl",
    "diffusers.pipelines.stable_cascade",
    "transformers",
    "transformers.models.t5.modeling_t5",
    "transformers.models.clip.modeling_clip",
    "open_clip",
    "torchmetrics",
    "tqdm",
)


def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    header = struct.pack("!I", len(data))
    if fds:
        socket.send_fds(conn, [header + data], fds)
    else:
        conn.sendall(header + data)


def _recv(conn: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (and the file descriptors sent with it); None when the peer closed."""
    header, fds, _, _ = socket.recv_fds(conn, 4, max_fds) if max_fds else (conn.recv(4), [], 0, None)
    if len(header) < 4:
        return None, fds
    size = struct.unpack("!I", header)[0]
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None, fds
        data += chunk
    return json.loads(data), fds


# ---- client: the CLI of a job -------------------------------------------------------------------


def run_in_server(argv: list[str]) -> int | None:
    """Run ``python -m harness <argv>`` in a child of the preload server; its exit status, or None
    when no server is configured or listening (the caller then runs the command itself)."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not argv or argv[0] not in COMMANDS:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    try:
        _send(conn, request, [0, 1, 2])
        started, _ = _recv(conn)
    except OSError:
        started = None
    if not started:  # the server went away before forking: run the command here
        conn.close()
        return None
    child = started["pid"]

    def forward(signum, _frame):  # a cancelled job cancels its child
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    finished, _ = _recv(conn)
    conn.close()
    if finished is None:
        print(f"crash: the preloaded child (pid {child}) of `python -m harness {argv[0]}` died without an exit "
              "status (killed, or a fault in native code); see the lines above", file=sys.stderr)
        return 3
    return int(finished["exit"])


# ---- server --------------------------------------------------------------------------------------


def _die_with_client(conn: socket.socket) -> None:
    """End this child when its client (the job's own process) is gone: a killed run must not leave
    an orphan writing images beside the job that resumes it. The client sends nothing after its
    request, so the connection reads end-of-file exactly when it exits or is killed."""
    import threading

    def watch() -> None:
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="client-watch", daemon=True).start()


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the job's process, run the command, report its status."""
    code = 3
    try:
        _send(conn, {"pid": os.getpid()})
        _die_with_client(conn)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin, sys.stdout, sys.stderr = (open(0, "r", closefd=False), open(1, "w", closefd=False),
                                             open(2, "w", closefd=False))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(SOCKET_ENV, None)  # the child runs the command itself
        sys.path[0] = os.getcwd()  # as `python -m` would: the job's working directory first
        sys.argv = ["python -m harness", *request["argv"]]
        import logging
        import runpy

        logging.root.handlers.clear()  # the CLI configures logging onto this job's stderr
        for name in [m for m in sys.modules if m.split(".")[0] in ("harness", "models")]:
            del sys.modules[name]  # the job's own checkout, imported fresh
        runpy.run_module("harness", run_name="__main__", alter_sys=True)  # `python -m harness`: exits
    except SystemExit as exc:  # the CLI's exit status (argparse's too), as the interpreter would set it
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001  (reported, never swallowed: the status says crash)
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        try:
            _send(conn, {"exit": code})
        finally:
            os._exit(code)


def serve(path: str | Path) -> None:
    """Listen on ``path``, preload, then fork one child per request until SIGTERM, the socket file is
    removed, or the process that started the server exits. Clients that connect during the preload
    wait in the backlog."""
    import importlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional library: its jobs import it themselves
            pass
    print(f"preloaded {len(PRELOAD)} modules; serving {path}", flush=True)
    server.settimeout(1.0)  # how soon it notices that the run that started it is gone
    parent = os.getppid()
    try:
        while path.exists() and os.getppid() == parent:  # the run that started it is gone: stop
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            request, fds = _recv(conn, max_fds=3)
            if request is None or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                _child(conn, request, fds)
            print(f"pid {pid}: python -m harness {' '.join(request['argv'])}", flush=True)
            for fd in fds:
                os.close(fd)
            conn.close()
    finally:
        server.close()
        if path.exists():
            path.unlink()
