"""One benchmark consumer: drain a slot up to an end LSN through the project's typed path.

``python -m bench.drain DSN SLOT PUBLICATION ENDPOS MODE [--binary]`` where MODE is
``typed`` (decode + assemble into Transactions of lazy rows: nothing converted),
``read2`` (typed, then read two columns of every after-image, as a deriver would) or
``eager`` (typed, then convert every column of both images).  Prints one JSON line:
changes, transactions, seconds, peak RSS.
"""

from __future__ import annotations

import sys
import time

import orjson

from cdc.assembler import Assembler
from cdc.lsn import parse_lsn
from cdc.pgoutput import Decoder
from cdc.stream import ReplicationStream


def peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    dsn, slot, publication, endpos_text, mode = sys.argv[1:6]
    binary = "--binary" in sys.argv
    read_cols = sys.argv[sys.argv.index("--cols") + 1].split(",") if "--cols" in sys.argv else []
    endpos = parse_lsn(endpos_text)
    decoder = Decoder()
    assembler = Assembler()
    changes = txs = 0
    started = time.perf_counter()
    sink = 0
    with ReplicationStream(dsn, slot, publication, binary=binary, status_interval=10.0) as stream:
        while True:
            data = stream.read(5.0)
            if data is None:
                if stream.server_wal_end >= endpos and not assembler.in_transaction:
                    break
                continue
            tx = assembler.feed(decoder.decode(data))
            if tx is None:
                continue
            txs += 1
            changes += len(tx.changes)
            if mode == "read2":
                for c in tx.changes:
                    after = c.after
                    if after is not None and c.before is not None:
                        for col in read_cols:
                            if after.changed(c.before, col):
                                sink += after[col] is not None
            elif mode == "eager":
                for c in tx.changes:
                    if c.before is not None:
                        c.before.to_dict()
                    if c.after is not None:
                        c.after.to_dict()
            stream.confirm(tx.end_lsn)
            if tx.end_lsn >= endpos:
                break
    elapsed = time.perf_counter() - started
    print(
        orjson.dumps(
            {"changes": changes, "transactions": txs, "seconds": elapsed, "peak_rss_kb": peak_rss_kb()}
        ).decode()
    )


if __name__ == "__main__":
    main()
