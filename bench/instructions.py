"""Instructions per row change of the watcher's per-event path, counted by callgrind.

Wall time on this machine drifts by ±20 % within minutes; an instruction count does not (it
repeats to about 1 %), so this is the measure for judging a change to the per-event code. It
captures the full-path workload's messages (as :mod:`bench.replay` does), then replays the
first ``--base`` messages and the first ``--base + --extra`` under ``valgrind --tool=callgrind``
in child processes: the difference divided by the extra row changes is the steady-state cost
of one more change (decode, fold, state, derivers, envelopes, the discarding sink's JSON);
start-up, imports and caches warming up cancel out. ``--tree`` runs the children on other
checkouts too (extensions built in place), side by side.

    python -m bench.instructions [--ntx 20] [--per 1000] [--tree ../before]

Needs valgrind. Instructions are not time (cache misses and allocation are cheaper or dearer
than they count), so confirm a real gain with :mod:`bench.ab`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cdc.localpg import LocalPostgres

from .replay import SETTINGS, capture_workload
from .run import watcher_env

_ROW_KINDS = frozenset(b"IUD")


# The child: the watcher's per-message path over the first N captured messages, importing the
# code of the tree it runs in (so it names nothing of this benchmark's own checkout).
CHILD = """
import gc, pickle, sys
from cdc.pgoutput import Decoder
from cdc.sinks.memory import DiscardSink
from cdc.watch import GC_THRESHOLD, Watcher, WatchOptions
from derivers import default_derivers

dsn, slot, path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(path, "rb") as f:
    messages = pickle.load(f)[:count]
sink = DiscardSink()
watcher = Watcher(WatchOptions(dsn, slot=slot), sink, default_derivers())
watcher.prepare()
gc.collect()
gc.freeze()
gc.set_threshold(*GC_THRESHOLD)
decoder, assembler = Decoder(), watcher.assembler()
for data in messages:
    tx = assembler.feed(decoder.decode(data))
    if tx is not None:
        watcher.process(tx)
        watcher.delivery.write_full_chunk()  # a full batch's envelopes to the sink, as a send would
sink.write(watcher.delivery.chunk)
"""


def counted(tree: Path, dsn: str, slot: str, path: str, count: int) -> int:
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    argv += ["-c", CHILD, dsn, slot, path, str(count)]
    env = {**watcher_env(), "PYTHONPATH": str(tree)}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tree)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"replay under callgrind failed in {tree}: {out.stderr[-600:]}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntx", type=int, default=20)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--base", type=int, default=1000, help="messages replayed in the baseline run")
    ap.add_argument("--extra", type=int, default=10000, help="messages more in the measured run")
    ap.add_argument("--tree", action="append", default=[], help="another checkout to count (repeatable)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: install it (apt-get install valgrind) or use bench.ab")
    console = Console()
    trees = [Path(__file__).resolve().parent.parent, *(Path(t).resolve() for t in args.tree)]
    with LocalPostgres(settings=SETTINGS) as pg:
        dsn, messages = capture_workload(pg, args.ntx, args.per)
        top = args.base + args.extra
        if len(messages) < top:
            raise SystemExit(f"captured {len(messages)} messages, fewer than --base + --extra = {top}")
        changes = sum(1 for m in messages[args.base : top] if m[0] in _ROW_KINDS)
        table = Table(
            title=f"instructions per row change ({changes:,} changes beyond the first {args.base:,} messages)"
        )
        for col in ("tree", "instructions per change", "vs first"):
            table.add_column(col)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "messages.pickle")
            with open(path, "wb") as f:
                pickle.dump(messages, f)
            first = 0.0
            for tree in trees:
                per = (
                    counted(tree, dsn, "replay", path, top) - counted(tree, dsn, "replay", path, args.base)
                ) / changes
                first = first or per
                table.add_row(str(tree), f"{per:,.0f}", f"{per / first:.3f}")
                console.print(f"{tree}: {per:,.0f} instructions per change")
    console.print(table)


if __name__ == "__main__":
    main()
