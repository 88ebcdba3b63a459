"""The isolated runner: whatever a child does to itself, the caller gets an answer."""

from __future__ import annotations

import ctypes
import os
import time

import pytest

from segdash.sandbox import IsolatedFailure, Limits, run_isolated

LIMITS = Limits(memory_bytes=300_000_000, cpu_seconds=3, wall_seconds=6)


def echo(payload: bytes) -> dict:
    return {"length": len(payload), "pid": os.getpid()}


def segfault(payload: bytes) -> dict:
    ctypes.string_at(0)
    return {}


def abort(payload: bytes) -> dict:
    os.abort()


def spin(payload: bytes) -> dict:
    while True:
        pass


def sleep(payload: bytes) -> dict:
    time.sleep(600)
    return {}


def allocate(payload: bytes) -> dict:
    blocks = [bytearray(50_000_000) for _ in range(100)]  # 5 GB, over the 300 MB limit
    return {"n": len(blocks)}


def fails(payload: bytes) -> dict:
    raise ValueError("<b>refused</b>")


def _run(name: str, payload: bytes = b"x", limits: Limits = LIMITS) -> dict:
    return run_isolated(f"tests.test_sandbox:{name}", payload, limits)


def test_result_comes_back_as_json_from_another_process():
    reply = _run("echo", b"a" * 1000)
    assert reply == {"ok": True, "result": {"length": 1000, "pid": reply["result"]["pid"]}}
    assert reply["result"]["pid"] != os.getpid()


# spinning: 2 s of CPU well within the wall clock even on a loaded machine; sleeping: no
# CPU at all, so only the wall clock stops it
@pytest.mark.parametrize(("name", "why", "limits"), [
    ("segfault", "SIGSEGV", LIMITS),
    ("abort", "SIGABRT", LIMITS),
    ("spin", "CPU time", Limits(300_000_000, 2, 120)),
    ("sleep", "longer than 3 s", Limits(300_000_000, 60, 3)),
])
def test_a_child_that_crashes_or_hangs_is_reported_and_the_caller_survives(name, why, limits):
    with pytest.raises(IsolatedFailure, match=why):
        _run(name, limits=limits)
    assert _run("echo")["ok"]  # the next call works


def test_a_child_over_its_memory_limit_fails_with_memory_error():
    reply = _run("allocate")
    assert reply["ok"] is False and reply["error"] == "MemoryError"


def test_an_exception_in_the_child_comes_back_as_text():
    assert _run("fails") == {"ok": False, "error": "ValueError", "message": "<b>refused</b>"}


def prints(payload: bytes) -> dict:
    os.write(1, b"native code printing to fd 1\n")
    print("and Python printing")
    return {"printed": True}


def test_output_printed_by_the_child_does_not_corrupt_the_reply():
    assert _run("prints") == {"ok": True, "result": {"printed": True}}
    assert _run("echo", b"abc")["result"]["length"] == 3
