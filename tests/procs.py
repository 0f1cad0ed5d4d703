"""Process helpers shared by the out-of-process tests: run a command, stop a process this test
started (by its pid, SIGTERM then SIGKILL), time a SIGTERM, read the end of a log, pick a free
loopback port, poll for a condition with a deadline.
Imported with the tests/ folder on sys.path."""
import os
import signal
import socket
import subprocess
import time


def run(args, timeout=120, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def stop(proc, timeout=30):
    """Stops a process this test started, by its pid: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def terminate(proc, timeout=10):
    """SIGTERM to a process this test started; returns (exit code, or None if it is still
    running after `timeout` seconds; seconds it took)."""
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - start


def tail(path, n=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what, interval=0.2, log=None):
    """Polls `predicate` until it returns something true and returns that value; after
    `timeout` seconds fails naming `what`, with the end of `log` when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s%s"
                         % (timeout, what, ("\n" + tail(log)) if log else ""))

