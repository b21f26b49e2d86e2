"""A throwaway PostgreSQL server for tests and benchmarks/workers.py: Debian's `postgresql`
binaries, a cluster in a fresh dir directly under /tmp (pytest's temp dirs are closed to other
users, and initdb refuses root, so as root the server runs as the `postgres` user), trust auth,
a free port on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    which = shutil.which("initdb")
    if not found and not which:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql; "
                           "`make install` does it)")
    return Path(found[-1] if found else which).parent  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A running server while the block runs; its URL (user postgres, database postgres)."""
    bin_dir, root = _bin_dir(), Path(tempfile.mkdtemp(prefix="prunesearch-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True)
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l",
                        str(root / "log"), "-o", f"-p {port} -k {root} -c "
                        "listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400", "start"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
