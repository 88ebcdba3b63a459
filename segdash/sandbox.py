"""Running a parser of untrusted bytes in a short-lived child process with limits.

Native parsers (LightGBM's model-string reader, compiled tree code, zlib...) cannot be made
safe in-process: a corrupt input can abort (``SIGABRT``), segfault, loop for ever or
allocate without bound, and in a server that loses every session. :func:`run_isolated`
calls a function on the bytes in a *forked child* with an address-space limit
(``RLIMIT_AS``), a CPU-time limit (``RLIMIT_CPU``), no core dumps, and a wall-clock
timeout; whatever happens to the child, the caller gets a result or an
:class:`IsolatedFailure` saying what went wrong.

The children are forked from a helper process (a "zygote": started once with
``python -c``, it imports the modules the function needs, then forks one child per call),
not from the caller: forking a multi-threaded server is unsafe, and starting a fresh
Python per call costs 3-5 s here (importing scikit-learn and skops) against ~10 ms for a
fork. The helper itself never touches the bytes; it only forks, waits and relays.

What comes back is **JSON only** (the function must return a JSON-able dict), never a
pickle: the child processed hostile bytes and cannot be trusted to send objects.
Unix only (``fork`` and ``resource``).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

#: Largest reply (JSON) accepted from a child, in bytes.
MAX_REPLY_BYTES = 16_000_000


@dataclass(frozen=True)
class Limits:
    """What a child may use.

    Attributes
    ----------
    memory_bytes : int
        Address space the child may add to what the helper already maps (its Python and
        libraries), in bytes (``RLIMIT_AS``).
    cpu_seconds : int
        CPU time (``RLIMIT_CPU``); the child is killed beyond it.
    wall_seconds : float
        Wall-clock time before the child is killed (a child blocked without using CPU).
    """

    memory_bytes: int
    cpu_seconds: int
    wall_seconds: float


class IsolatedFailure(RuntimeError):
    """The child did not return a result: killed by a signal, out of time, or broken."""


def _frame(fh: BinaryIO, data: bytes | Sequence[bytes]) -> None:
    parts = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
    fh.write(struct.pack("<Q", sum(len(p) for p in parts)))
    for part in parts:  # written one after the other: no joined copy of a large payload
        fh.write(part)


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        chunk = fh.read(n - have)
        if not chunk:
            raise EOFError
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _read_frame(fh: BinaryIO, limit: int) -> bytes:
    (n,) = struct.unpack("<Q", _read_exact(fh, 8))
    if n > limit:
        raise ValueError(f"frame of {n} bytes exceeds {limit}")
    return _read_exact(fh, n)


# -- the child side (runs in the forked process) -------------------------------------------

def _vm_size() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_self(limits: dict) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    mem = _vm_size() + int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))


def _resolve(name: str) -> Callable[[bytes], dict]:
    import importlib

    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _child(func: str, limits: dict, payload: bytes, out_fd: int) -> None:
    """In the forked child: limit, run, write the JSON reply, exit without cleanup."""
    try:
        _limit_self(limits)
        try:
            reply = {"ok": True, "result": _resolve(func)(payload)}
        except BaseException as exc:  # every failure becomes a reply, never a traceback
            reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:4000]}
        data = json.dumps(reply).encode()
    except BaseException as exc:  # even a MemoryError while encoding the reply
        data = json.dumps({"ok": False, "error": type(exc).__name__,
                           "message": "the child could not reply"}).encode()
    with os.fdopen(out_fd, "wb") as fh:
        fh.write(data)
    os._exit(0)


def _wait(pid: int, deadline: float) -> tuple[int | None, bool]:
    """Wait for ``pid`` until ``deadline``; kill it then. Returns (wait status, timed out)."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status, False
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1], True
        time.sleep(0.01)


def _run_one(func: str, limits: dict, payload: bytes, channel: int) -> dict:
    """In the helper: fork a child for one call and describe how it ended."""
    r, w = os.pipe()
    start = time.monotonic()
    deadline = start + float(limits["wall_seconds"])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; it always ends in os._exit
        os.close(r)
        os.close(channel)  # the helper's line to the caller is not the child's
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        try:
            _child(func, limits, payload, w)
        finally:
            os._exit(70)
    os.close(w)
    chunks, size, too_big, timed_out = [], 0, False, False
    with os.fdopen(r, "rb", buffering=0) as fh:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fh], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = fh.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                too_big = True
                break
            chunks.append(chunk)
    status, killed = _wait(pid, deadline if not (timed_out or too_big) else 0)
    timed_out = timed_out or killed
    out: dict[str, Any] = {"seconds": time.monotonic() - start}
    if timed_out:
        out["end"] = "timeout"
    elif os.WIFSIGNALED(status):
        out["end"] = "signal"
        out["signal"] = signal.Signals(os.WTERMSIG(status)).name
    elif too_big:
        out["end"] = "broken"
        out["detail"] = "reply too large"
    else:
        out["end"] = "exit"
        out["code"] = os.WEXITSTATUS(status)
        out["reply"] = b"".join(chunks).decode("utf-8", "replace")
    return out


def _helper_main(preload: Sequence[str]) -> None:  # pragma: no cover - a process of its own
    """The helper's loop: read a call from stdin, fork, write how it ended to stdout."""
    import importlib

    for name in preload:
        module, _, func = name.partition(":")
        try:
            imported = importlib.import_module(module)
            if func:  # a warm-up function: what every child would otherwise redo
                getattr(imported, func)()
        except Exception:  # the call that needs it reports the failure
            pass
    stdin = sys.stdin.buffer
    # The replies go through a private copy of stdout; fd 1 itself becomes stderr, so
    # anything a native library prints (in a child, say) cannot corrupt the replies.
    channel = os.dup(1)
    stdout = os.fdopen(channel, "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        try:
            header = json.loads(_read_frame(stdin, 1 << 20))
            payload = _read_frame(stdin, 1 << 40)
        except EOFError:  # the caller closed the pipe (exited): so do we
            return
        result = _run_one(header["func"], header["limits"], payload, channel)
        _frame(stdout, json.dumps(result).encode())
        stdout.flush()


# -- the caller side -----------------------------------------------------------------------

class _Helper:
    """A helper process, started on first use, restarted if gone; one call at a time."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.owner = 0
        self.preload: tuple[str, ...] = ()

    def _start(self, preload: tuple[str, ...]) -> subprocess.Popen:
        env = dict(os.environ)
        # One thread each for BLAS/OpenMP: the helper must stay single-threaded to fork
        # safely, and a check needs no parallelism. Few malloc arenas keep the address
        # space (what RLIMIT_AS counts) close to what is really used.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   MALLOC_ARENA_MAX="2", SEGDASH_THREADS="1")
        # The caller's import path, as absolute folders (the helper must import the same
        # modules, and not whatever the current folder holds: hence -P).
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
        code = ("import sys; from segdash.sandbox import _helper_main; "
                "_helper_main(sys.argv[1:])")
        return subprocess.Popen([sys.executable, "-P", "-c", code, *preload],
                                stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)

    def call(self, func: str, payload: bytes | Sequence[bytes], limits: Limits,
             preload: tuple[str, ...]) -> dict:
        alive = self.proc is not None and self.proc.poll() is None
        if not alive or self.owner != os.getpid() or not set(preload) <= set(self.preload):
            self._stop()
            self.preload = tuple(sorted(set(self.preload) | set(preload)))
            self.proc = self._start(self.preload)
            self.owner = os.getpid()
        proc = self.proc
        try:
            _frame(proc.stdin, json.dumps({"func": func, "limits": asdict(limits)}).encode())
            _frame(proc.stdin, payload)
            proc.stdin.flush()
            # The helper enforces the wall clock; allow for its own start-up (imports).
            ready, _, _ = select.select([proc.stdout], [], [], limits.wall_seconds + 120)
            if not ready:
                raise TimeoutError
            return json.loads(_read_frame(proc.stdout, MAX_REPLY_BYTES + 4096))
        except (OSError, EOFError, ValueError, TimeoutError) as exc:
            self._stop()
            raise IsolatedFailure(f"the isolated checker failed ({type(exc).__name__})"
                                  ) from exc

    def _stop(self) -> None:
        if self.proc is not None and self.owner == os.getpid():
            try:
                self.proc.kill()
                self.proc.wait(5)
            except Exception:  # already gone
                pass
            for fh in (self.proc.stdin, self.proc.stdout):
                try:
                    fh.close()
                except Exception:
                    pass
        self.proc = None


class _Pool:
    """Idle helpers; a call takes one (or starts one), so concurrent checks (two sessions
    uploading at once) run side by side and a slow check does not hold up the others."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Helper] = []

    def call(self, func: str, payload: bytes | Sequence[bytes], limits: Limits,
             preload: tuple[str, ...]) -> dict:
        with self.lock:
            helper = self.idle.pop() if self.idle else _Helper()
        try:
            return helper.call(func, payload, limits, preload)
        finally:
            with self.lock:
                self.idle.append(helper)

    def stop(self) -> None:
        with self.lock:
            for helper in self.idle:
                helper._stop()
            self.idle.clear()


_HELPERS = _Pool()
atexit.register(_HELPERS.stop)


def ping(payload: bytes) -> dict:
    """A call that does nothing: :func:`run_isolated` of it starts a helper ahead of use."""
    return {}


def run_isolated(func: str, payload: bytes | Sequence[bytes], limits: Limits,
                 preload: Sequence[str] = ()) -> dict:
    """Call ``func(payload)`` in a forked child with ``limits``; return its JSON result.

    Parameters
    ----------
    func : str
        ``"module:function"``, a function of one ``bytes`` argument returning a JSON-able
        dict. It may raise: the exception's class name and message come back.
    payload : bytes or sequence of bytes
        The untrusted bytes (parts are sent one after the other and arrive joined).
    limits : Limits
        Memory, CPU time and wall-clock time of the child.
    preload : sequence of str
        Modules the helper imports once, before forking (what ``func`` needs);
        ``"module:function"`` also calls that function (a warm-up) once.

    Returns
    -------
    dict
        ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": class name,
        "message": str}`` when ``func`` raised.

    Raises
    ------
    IsolatedFailure
        The child was killed (a signal: ``SIGABRT``, ``SIGSEGV``, ``SIGKILL`` of the CPU
        limit...), ran out of wall-clock time, or did not reply. The message says which.
    """
    end = _HELPERS.call(func, payload, limits, tuple(preload))
    if end["end"] == "timeout":
        raise IsolatedFailure(f"took longer than {limits.wall_seconds:g} s and was stopped")
    if end["end"] == "signal":
        sig = end["signal"]
        why = {"SIGXCPU": f"used more than {limits.cpu_seconds} s of CPU time",
               "SIGKILL": f"was killed (CPU time over {limits.cpu_seconds} s, or memory)",
               "SIGABRT": "aborted (SIGABRT: a native library gave up on it)",
               "SIGSEGV": "crashed (SIGSEGV: invalid memory access in native code)"}
        raise IsolatedFailure(why.get(sig, f"was killed by {sig}"))
    if end["end"] != "exit" or end.get("code") != 0:
        raise IsolatedFailure(f"ended without a result ({end.get('detail') or end})")
    try:
        reply = json.loads(end["reply"])
    except ValueError as exc:
        raise IsolatedFailure("sent a reply that is not JSON") from exc
    if not isinstance(reply, dict) or "ok" not in reply:
        raise IsolatedFailure("sent a malformed reply")
    return reply
