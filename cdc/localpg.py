"""A throwaway local Postgres cluster: initdb into a temp dir, start, hand out DSNs, remove.

Used by the test harness and by ``cdc demo``.  The server runs with ``wal_level=logical``,
room for many slots and senders, and a short ``wal_sender_timeout`` so keepalives come
quickly.  Postgres refuses to run as root, so when this process is root the cluster
directory is given to the ``postgres`` system user and every server binary runs through
``runuser``.  :meth:`LocalPostgres.stop` (also registered with :mod:`atexit`) stops the
server and deletes the directory, whatever state the caller is in.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import CdcError

SERVER_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "64",
    "max_wal_senders": "64",
    "max_connections": "200",
    "wal_sender_timeout": "6s",
    "fsync": "off",  # a throwaway cluster: crash safety of the server is not under test
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "listen_addresses": "127.0.0.1",
    "log_min_messages": "warning",
    "logical_decoding_work_mem": "64MB",
}


class LocalPostgresError(CdcError):
    hint = "install the PostgreSQL server binaries (Debian: postgresql-15) or set CDC_PG_BINDIR"


def find_bindir() -> Path:
    """The directory holding initdb/pg_ctl: CDC_PG_BINDIR, pg_config, or a Debian layout."""
    env = os.environ.get("CDC_PG_BINDIR")
    candidates: list[str] = [env] if env else []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise LocalPostgresError("no PostgreSQL server binaries (initdb, pg_ctl) found")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalPostgres:
    """One private cluster. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        settings: dict[str, str] | None = None,
        port: int | None = None,
        hba: Sequence[str] = (),
    ) -> None:
        self.bindir = find_bindir()
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        #: pg_hba.conf lines checked before initdb's own (which trust everyone): a role that must
        #: give a password, say.
        self.hba = tuple(hba)
        self.port = port or free_port()
        self._port_chosen = port is None  # ours to change when another process takes it first
        self.root = Path(tempfile.mkdtemp(prefix="cdc-pg-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        self._started = False
        atexit.register(self.stop)

    # -- process helpers ---------------------------------------------------------
    def _run(self, argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> LocalPostgres:
        self.sockdir.mkdir(parents=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o755)
            for p in (self.root, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        res = self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if res.returncode != 0:
            raise LocalPostgresError(f"initdb failed: {res.stderr.strip().splitlines()[-1:]}")
        if self.hba:
            hba_file = self.datadir / "pg_hba.conf"
            hba_file.write_text("\n".join(self.hba) + "\n" + hba_file.read_text())
        for attempt in range(5):
            res = self.pg_ctl_start()
            if res.returncode == 0:
                break
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            # the free port was taken between free_port() and the server's bind (another test
            # session side by side, say): another port, when the port was ours to choose
            if not (self._port_chosen and "could not bind" in log and attempt < 4):
                raise LocalPostgresError(f"the throwaway server did not start: {res.stderr.strip()} {log}")
            self.port = free_port()
            self.logfile.unlink(missing_ok=True)
        self._started = True
        return self

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pg_ctl`` on this cluster's data directory and log file, with ``args``."""
        return self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), *args]
        )

    def pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        """``pg_ctl start`` with the cluster's port, socket directory and settings."""
        opts = [f"-p {self.port}", f"-k {self.sockdir}"] + [f"-c {k}={v}" for k, v in self.settings.items()]
        return self.pg_ctl("-o", " ".join(opts), "-w", "-t", "60", "start")

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m <mode>``: same data directory, port and settings (pg_ctl keeps the
        server's options in postmaster.opts, not its log file)."""
        res = self.pg_ctl("-m", mode, "-w", "-t", "60", "restart")
        if res.returncode != 0:
            raise LocalPostgresError(f"the throwaway server did not restart: {res.stderr.strip()}")

    def stop(self) -> None:
        if self._started:
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                timeout=60,
            )
            self._started = False
        # wait briefly for the postmaster to let go of its files
        for _ in range(50):
            if not (self.datadir / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", **params: str) -> str:
        parts = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "user": "postgres",
            "dbname": dbname,
            **params,
        }
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
