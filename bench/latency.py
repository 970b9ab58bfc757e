"""Commit-to-delivered latency (issue 14): a running ``cdc watch`` into the outbox under a steady
ticket workload, and pg_recvlogical beside it as the floor.

Per repetition, the installed ``cdc watch`` runs as a daemon on a slot of its own (default sink:
the outbox in the watched database, default settings, plus ``--metrics-addr`` on a free local
port) and a writer thread issues ``--rate`` ticket transactions per second for ``--seconds``
(after ``--warmup`` seconds at the same rate that are not counted): one autocommit ``UPDATE`` of
one ``tickets`` row — the status toggled, a new assignee, ``updated_at`` — the change
:mod:`bench.watch`'s workload makes, one row per transaction. The writer paces itself by an
absolute schedule (transaction *i* is due at ``start + i / rate``; a late one is sent at once,
so the rate holds on average and a stall shows as a burst, never as a lower rate).

Latency of one event = when it became visible in ``cdc.outbox`` minus when its source
transaction committed:

* *visible*: a poller thread selects the rows past the last ``seq`` it saw (the primary key's
  index) every 5 ms by an absolute schedule, and stamps each row with its clock taken just
  before the query; a row's visibility is thus known to within one poll period (≤ 5 ms late,
  ~2.5 ms on average) plus the query's start-up;
* *committed*: the writer's clock right after its ``UPDATE`` returned (``RETURNING`` the
  transaction's xid, which every envelope carries in ``source.xid``). This is the primary
  measure because the envelope's ``source.commitTime`` is truncated to whole milliseconds (the
  catalog's canonical form), which adds 0–1 ms of noise to latencies of a few milliseconds;
  the writer's clock is microsecond-precise and is what an application can observe: "my
  transaction is committed" → "its events are in the outbox". It is a little later than the
  server's commit timestamp (by the flush and the round trip back, well under a millisecond
  here). The latency from ``commitTime`` is reported beside it. All clocks are this machine's
  wall clock (``time.time()``), so there is no skew between them.

The watcher's own ``cdc_commit_to_delivered_seconds`` histogram (per source transaction, from
its commit time to the batch being durable) is scraped when the measured window starts and
after the last transaction is delivered; the difference gives Prometheus-style quantile
estimates (linear within a bucket: coarse, the buckets are 5, 10, 25, 50, 100 ms …).

The floor: ``pg_recvlogical`` with ``test_decoding`` on a slot of its own writing to a pipe; the
time from the writer's commit to its ``COMMIT <xid>`` line. (test_decoding, not pgoutput: the
binary pgoutput messages cannot be split back out of pg_recvlogical's output, and the floor is
the server's wake-up and send path, which both plugins share.) ``--no-recvlogical`` leaves it
out.

Statistics are per repetition; the table gives their medians over ``--reps``, and
``bench/results/latency-<rate>x<seconds>.json`` every repetition's figures. The machine's other
load shows directly in these numbers: run it on a quiet machine for figures to quote.

    python -m bench.latency [--rate 500] [--seconds 60] [--reps 1] [--warmup 2] [--no-recvlogical]
"""

from __future__ import annotations

import argparse
import compileall
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from cdc.config import DEFAULT_TABLES
from cdc.localpg import LocalPostgres, free_port
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.state import make_bootstrap_hook
from derivers import default_derivers

from .run import RESULTS, SETUP_SQL, recvlogical_argv, watcher_env

#: The p99 the issue asks for (seconds).
TARGET_P99_S = 0.100
POLL_INTERVAL_S = 0.005
#: How long the last transaction may take to show up once the writer is done.
DRAIN_TIMEOUT_S = 60.0
HISTOGRAM = "cdc_commit_to_delivered_seconds"

# One application-shaped ticket update per transaction (bench.run's bench_tickets, from a client).
TICKET_UPDATE = """
UPDATE tickets
   SET status_id = CASE WHEN status_id = '66666666-6666-4666-8666-666666666661'
                        THEN '66666666-6666-4666-8666-666666666662'::uuid
                        ELSE '66666666-6666-4666-8666-666666666661'::uuid END,
       assigned_to = gen_random_uuid(), updated_at = now()
 WHERE ticket_number = %s
RETURNING pg_current_xact_id()::xid::text
"""
# New outbox rows, through the primary key (seq).
OUTBOX_SINCE = """
SELECT seq, (envelope->'source'->>'xid')::bigint, envelope->'source'->>'commitTime'
  FROM cdc.outbox WHERE seq > %s ORDER BY seq
"""


# -- statistics (pure) ---------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 ≤ q ≤ 1) of ``values``, linear between the closest ranks (numpy's
    default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def histogram_buckets(exposition: str, name: str = HISTOGRAM) -> list[tuple[float, float]]:
    """The cumulative buckets ``(upper bound, count)`` of histogram ``name`` in a Prometheus
    text exposition, by bound (``+Inf`` last); empty when the histogram is absent."""
    for family in text_string_to_metric_families(exposition):
        if family.name == name:
            return sorted(
                (float(s.labels["le"]), s.value) for s in family.samples if s.name == f"{name}_bucket"
            )
    return []


def bucket_difference(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The observations made between two scrapes of one histogram (same bounds)."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's ``histogram_quantile``: the bucket holding rank ``q × total``, linear within
    it (from 0 for the first); the highest finite bound when the rank falls in ``+Inf``; NaN for
    no observations."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Summary:
    """Latency figures of one measure, in seconds."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            len(values),
            percentile(values, 0.50),
            percentile(values, 0.90),
            percentile(values, 0.99),
            max(values, default=math.nan),
        )


# -- the moving parts (threads of this process; the watcher and pg_recvlogical are children) -----
class Writer(threading.Thread):
    """``count`` ticket transactions at ``rate`` per second by an absolute schedule; records
    each one's xid and the wall clock right after its commit returned."""

    def __init__(self, dsn: str, rate: float, count: int, warmup: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rate, self.count, self.warmup = dsn, rate, count, warmup
        self.committed: dict[int, float] = {}  # xid → wall clock after COMMIT (measured window only)
        self.warmed_up = threading.Event()
        self.started_at = self.finished_at = 0.0  # monotonic, measured window
        self.max_behind = 0.0  # the most a transaction was sent after its due time
        self.last_xid: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.warmed_up.set()

    def _write(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, prepare_threshold=0) as conn:
            cur = conn.cursor()
            start = time.monotonic()
            for i in range(self.warmup + self.count):
                due = start + i / self.rate
                if i == self.warmup:
                    self.started_at = due
                    self.warmed_up.set()
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    self.max_behind = max(self.max_behind, -delay)
                row = cur.execute(TICKET_UPDATE, (f"B{i % 1000 + 1}",)).fetchone()
                committed = time.time()
                assert row is not None
                self.last_xid = int(row[0])
                if i >= self.warmup:
                    self.committed[self.last_xid] = committed
            self.finished_at = time.monotonic()
        if not self.count:
            self.warmed_up.set()


class OutboxPoller(threading.Thread):
    """Every ``POLL_INTERVAL_S``: the outbox rows past the last ``seq`` seen, each stamped with
    the wall clock taken just before the query — ``(xid, commitTime, seen)``."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.rows: list[tuple[int, str, float]] = []
        self.xids: set[int] = set()
        self.polls = 0
        self.error: BaseException | None = None
        self._done = threading.Event()

    def run(self) -> None:
        try:
            self._poll()
        except BaseException as exc:
            self.error = exc

    def _poll(self) -> None:
        last = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.cursor()
            start = time.monotonic()
            while not self._done.is_set():
                seen = time.time()
                for seq, xid, commit_time in cur.execute(OUTBOX_SINCE, (last,)).fetchall():
                    self.rows.append((xid, commit_time, seen))
                    self.xids.add(xid)
                    last = seq
                self.polls += 1
                # the next tick of the schedule (skipping the ones a slow query overran)
                ticks = math.floor((time.monotonic() - start) / POLL_INTERVAL_S) + 1
                self._done.wait(max(0.0, start + ticks * POLL_INTERVAL_S - time.monotonic()))

    def stop(self) -> None:
        self._done.set()
        self.join()


class CommitLines(threading.Thread):
    """Reads pg_recvlogical's test_decoding output; ``COMMIT <xid>`` lines with the wall clock
    at which they were read."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.seen: dict[int, float] = {}

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            if line.startswith(b"COMMIT "):
                now = time.time()
                self.seen[int(line.split()[1])] = now


# -- one repetition --------------------------------------------------------------------------
@dataclass
class Rep:
    """What one repetition measured (seconds)."""

    writer: Summary
    commit_time: Summary
    histogram: dict[str, float]
    recvlogical: Summary | None
    rate: float
    transactions: int
    max_behind: float
    missing: int
    extra: dict[str, Any] = field(default_factory=dict)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
        return text


def wait_ready(port: int, watcher: subprocess.Popen[bytes], errors: IO[bytes]) -> None:
    """Until the watcher's ``/readyz`` answers 200 (its stream is open)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if watcher.poll() is not None:
            errors.seek(0)
            raise RuntimeError(f"cdc watch exited ({watcher.returncode}): {errors.read()[-800:]!r}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise RuntimeError("cdc watch did not become ready within 120 s")


def wait_for(done: Callable[[], bool], what: str, timeout: float = DRAIN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)


def run_rep(dsn: str, rep: int, args: argparse.Namespace) -> Rep:
    slot, rslot = f"lat{rep}", f"lat{rep}_recv"
    setup(
        dsn,
        slot=slot,
        publication="cdc_events",
        tables=DEFAULT_TABLES,
        bootstrap=make_bootstrap_hook(default_derivers()),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('cdc.outbox')").fetchone() != (None,):
            conn.execute("TRUNCATE cdc.outbox")
        if args.recvlogical:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (rslot,))
    port = free_port()
    cdc = str(Path(sys.executable).with_name("cdc"))
    argv = [cdc, "watch", "--dsn", dsn, "--slot", slot, "--metrics-addr", f"127.0.0.1:{port}"]
    recv: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryFile() as errors:
        watcher = subprocess.Popen(argv, env=watcher_env(), stdout=subprocess.DEVNULL, stderr=errors)
        try:
            wait_ready(port, watcher, errors)
            wait_for(lambda: _outbox_exists(dsn), "the outbox's creation")
            poller = OutboxPoller(dsn)
            poller.start()
            lines = None
            if args.recvlogical:
                # bench.run's command up to its pgoutput options; test_decoding's instead, to a
                # pipe, until stopped (no -E)
                recv_argv = recvlogical_argv(dsn, rslot, "0/0")
                recv_argv = [*recv_argv[: recv_argv.index("-o")], "-o", "skip-empty-xacts=1", "-f", "-"]
                recv = subprocess.Popen(recv_argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                assert recv.stdout is not None
                lines = CommitLines(recv.stdout)
                lines.start()
            count, warmup = round(args.rate * args.seconds), round(args.rate * args.warmup)
            writer = Writer(dsn, args.rate, count, warmup)
            writer.start()
            writer.warmed_up.wait()
            before = histogram_buckets(scrape(port))
            writer.join()
            if writer.error is not None:
                raise RuntimeError(f"the writer failed: {writer.error}") from writer.error
            last = writer.last_xid
            wait_for(lambda: last in poller.xids or poller.error is not None, "the last event's delivery")
            if lines is not None:
                wait_for(lambda: last in lines.seen, "pg_recvlogical's last COMMIT line")
            after = histogram_buckets(scrape(port))
            poller.stop()
            if poller.error is not None:
                raise RuntimeError(f"the outbox poller failed: {poller.error}") from poller.error
        finally:
            watcher.send_signal(signal.SIGTERM)
            status = watcher.wait(60)
            if recv is not None:
                recv.send_signal(signal.SIGINT)
                recv.wait(30)
        if status != 0:
            errors.seek(0)
            raise RuntimeError(f"cdc watch exited {status}: {errors.read()[-800:]!r}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in [slot, rslot] if args.recvlogical else [slot]:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (s,))
        conn.execute("CHECKPOINT")

    committed = writer.committed
    from_writer = [seen - committed[xid] for xid, _, seen in poller.rows if xid in committed]
    from_commit_time = [
        seen - datetime.fromisoformat(ct).timestamp() for xid, ct, seen in poller.rows if xid in committed
    ]
    window = bucket_difference(after, before)
    return Rep(
        writer=Summary.of(from_writer),
        commit_time=Summary.of(from_commit_time),
        histogram={
            "transactions": window[-1][1] if window else 0.0,
            **{f"p{round(q * 100)}": histogram_quantile(q, window) for q in (0.5, 0.9, 0.99)},
        },
        recvlogical=(
            Summary.of([lines.seen[x] - t for x, t in committed.items() if x in lines.seen])
            if lines is not None
            else None
        ),
        rate=count / (writer.finished_at - writer.started_at) if count else 0.0,
        transactions=count,
        max_behind=writer.max_behind,
        missing=len(committed.keys() - poller.xids),
        extra={"polls": poller.polls},
    )


def _outbox_exists(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT to_regclass('cdc.outbox')").fetchone() != (None,)


# -- report ------------------------------------------------------------------------------------
def report(console: Console, reps: list[Rep], args: argparse.Namespace) -> None:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values) if values else math.nan

    def ms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value * 1000:.1f}"

    rate = med([r.rate for r in reps])
    table = Table(
        title=f"commit-to-delivered latency, {args.rate:g} ticket tx/s for {args.seconds:g} s "
        f"(achieved {rate:,.0f}/s), median of {len(reps)} rep(s), ms"
    )
    for col in ("measure", "per", "count", "p50", "p90", "p99", "max"):
        table.add_column(col)
    rows: list[tuple[str, str, list[Summary]]] = [
        ("cdc watch → outbox, from the writer's COMMIT", "event", [r.writer for r in reps]),
        ("cdc watch → outbox, from source.commitTime", "event", [r.commit_time for r in reps]),
    ]
    recv = [r.recvlogical for r in reps if r.recvlogical is not None]
    if recv:
        rows.append(("pg_recvlogical stdout (test_decoding), from the COMMIT", "transaction", recv))
    out: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "achieved_rate": rate, "measures": []}
    for name, per, ss in rows:
        fig = {k: med([getattr(s, k) for s in ss]) for k in ("n", "p50", "p90", "p99", "max")}
        table.add_row(name, per, f"{fig['n']:,.0f}", *(ms(fig[k]) for k in ("p50", "p90", "p99", "max")))
        out["measures"].append({"measure": name, "per": per, **fig, "reps": [asdict(s) for s in ss]})
    hist = {k: med([r.histogram[k] for r in reps]) for k in ("transactions", "p50", "p90", "p99")}
    table.add_row(
        f"{HISTOGRAM} (estimate)",
        "transaction",
        f"{hist['transactions']:,.0f}",
        ms(hist["p50"]),
        ms(hist["p90"]),
        ms(hist["p99"]),
        "-",
    )
    out["histogram"] = hist
    console.print(table)
    p99 = med([r.writer.p99 for r in reps])
    missing = sum(r.missing for r in reps)
    behind = max(r.max_behind for r in reps)
    console.print(
        f"p99 {p99 * 1000:.1f} ms: target < {TARGET_P99_S * 1000:.0f} ms "
        f"{'met' if p99 < TARGET_P99_S else 'NOT met'}; writer at most {behind * 1000:.0f} ms behind "
        f"its schedule; {missing} transaction(s) without an event"
    )
    out.update(max_behind_s=behind, missing=missing, reps=[r.extra for r in reps])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"latency-{args.rate:g}x{args.seconds:g}.json").write_bytes(
        orjson.dumps(out, option=orjson.OPT_INDENT_2)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rate", type=float, default=500.0, help="ticket transactions per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the measured window")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds at --rate before it (not counted)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-recvlogical", dest="recvlogical", action="store_false")
    args = ap.parse_args()
    console = Console(width=120)
    # the command as installed, byte-code compiled (see bench.watch)
    root = Path(__file__).resolve().parent.parent
    for package in ("cdc", "catalog", "derivers"):
        compileall.compile_dir(root / package, quiet=1)
    reps: list[Rep] = []
    with LocalPostgres(settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB"}) as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())  # type: ignore[call-overload]
            conn.execute(SETUP_SQL)  # type: ignore[call-overload]
        for rep in range(args.reps):
            r = run_rep(dsn, rep, args)
            reps.append(r)
            console.print(
                f"rep {rep + 1}/{args.reps}: {r.transactions} transactions at {r.rate:,.0f}/s, "
                f"{r.writer.n} events, p50 {r.writer.p50 * 1000:.1f} ms, p99 {r.writer.p99 * 1000:.1f} ms"
            )
    report(console, reps, args)


if __name__ == "__main__":
    main()
