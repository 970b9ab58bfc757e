"""`make test`'s runner: the whole suite once per implementation of the pgoutput decoder
(``CDC_IMPL``, cdc/pgoutput/decoder.py), both sessions at once.

Each pytest session starts its own throwaway cluster and names its databases, Redis keys, NATS
subjects and streams uniquely, and most of a run is spent waiting on servers, so the two side
by side take about as long as one (5.7 min against 10.5 min one after the other on 2 cores).
The ``CDC_IMPL=python`` session's output shows as it goes; the ``CDC_IMPL=c`` session's, kept
in a temporary file, follows once both are done. The exit status is the first non-zero of the
two (0 when both passed).

Both sessions run in process groups of their own, so that Ctrl-C at the terminal (or SIGINT or
SIGTERM to the runner) reaches each of them exactly once, from the runner, as SIGINT: each tears
its fixtures down (its clusters stop) and the runner exits 130. Neither reads the terminal: for
``--pdb``, run pytest itself.

One after the other instead: ``TEST_SERIAL=1``, or ``CDC_TEST_DSN`` set (one server for both,
whose replication slot names are per server). Arguments are given to both sessions; the ``c``
session keeps its pytest cache apart (``.pytest_cache/impl-c``) so that ``--lf`` means each
session's own last failures.

    python tests/run_both_impls.py [pytest arguments]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


def pytest(impl: str, args: list[str]) -> list[str]:
    own_cache = ["-o", "cache_dir=.pytest_cache/impl-c"] if impl == "c" else []
    return [sys.executable, "-m", "pytest", "-q", *own_cache, *args]


def env(impl: str) -> dict[str, str]:
    return {**os.environ, "CDC_IMPL": impl}


def start(impl: str, args: list[str], out: IO[bytes] | None) -> subprocess.Popen[bytes]:
    """One session in a process group of its own, its output into ``out`` (None: ours)."""
    return subprocess.Popen(
        pytest(impl, args),
        env=env(impl),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        process_group=0,
    )


class Sessions:
    """The sessions started so far, and whether the runner was interrupted: SIGINT or SIGTERM
    to the runner is passed on once, as SIGINT, to each session still running."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        self.interrupted = False
        signal.signal(signal.SIGINT, self.interrupt)
        signal.signal(signal.SIGTERM, self.interrupt)

    def interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            return  # one Ctrl-C each: a second one would cut their teardown short
        self.interrupted = True
        for child in self.running:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    def start(self, impl: str, args: list[str], out: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        child = start(impl, args, out)
        self.running.append(child)
        return child


def serial(args: list[str]) -> int:
    sessions = Sessions()
    for impl in ("python", "c"):
        status = sessions.start(impl, args).wait()
        if sessions.interrupted:
            return 130
        if status:
            return status
    return 0


def side_by_side(args: list[str]) -> int:
    sessions = Sessions()
    with tempfile.TemporaryFile(prefix="cdc-test-c-") as log:
        c_run = sessions.start("c", args, log)
        print("== CDC_IMPL=python (CDC_IMPL=c runs beside it; its output follows) ==", flush=True)
        py_status = sessions.start("python", args).wait()
        c_status = c_run.wait()
        log.seek(0)
        print("\n== CDC_IMPL=c ==", flush=True)
        sys.stdout.buffer.write(log.read())
        sys.stdout.flush()
    print(f"\nCDC_IMPL=python: exit {py_status}; CDC_IMPL=c: exit {c_status}", flush=True)
    if sessions.interrupted:
        return 130
    return py_status or c_status


def main() -> int:
    args = sys.argv[1:]
    if os.environ.get("TEST_SERIAL") or os.environ.get("CDC_TEST_DSN"):
        return serial(args)
    return side_by_side(args)


if __name__ == "__main__":
    sys.exit(main())
