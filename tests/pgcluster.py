"""A throwaway PostgreSQL cluster on 127.0.0.1, for the tests and for CI.

    python3 tests/pgcluster.py start DIR   # prints `export BENCH_TEST_POSTGRES_URL=...` (for eval)
    python3 tests/pgcluster.py stop DIR    # stops it (immediately) and deletes DIR

Standard library only: `.ci/run` calls it before the virtual environment exists. The tests' fixture
(`postgres_server` in conftest.py) calls `start` itself when $BENCH_TEST_POSTGRES_URL is not set.
initdb refuses to run as root, so under root the cluster belongs to an unprivileged user (postgres
when it exists, else nobody), and DIR is made traversable for it. Authentication is `trust` and the
server listens on 127.0.0.1 only: nothing but this machine reaches it, and it lives for one test run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

USER = "bench"  # the cluster's superuser, whose database `bench` the URL names


def bindir() -> Path | None:
    """Where initdb, pg_ctl and createdb live: beside the initdb on PATH, else Debian's newest
    /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_ctl").exists():
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _owner() -> str | None:
    """The user the cluster runs as: None when not root (the current user), else postgres or nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists: create one "
                       "(useradd postgres) so that initdb can run without root")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], user: str | None, log: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run(argv, user=user, stdout=out, stderr=subprocess.STDOUT, cwd="/", timeout=120)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}); see {log}:\n"
                           + log.read_text(errors="replace")[-2000:])


def start(folder: Path) -> str:
    """Create and start a cluster under `folder` (which must be new or empty); returns its URL."""
    bins = bindir()
    if bins is None:
        raise RuntimeError("no initdb found (install PostgreSQL: apt-get install -y postgresql)")
    user = _owner()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    data, sockets, log = folder / "data", folder / "sockets", folder / "server.log"
    for path in (data, sockets):
        path.mkdir()
    log.touch()
    if user is not None:
        closed = [str(p) for p in folder.resolve().parents if not p.stat().st_mode & 0o001]
        if closed:
            raise RuntimeError(f"the cluster's user {user} cannot enter {closed[0]}: give a folder whose parents "
                               "others may enter (e.g. one made by `mktemp -d`, directly under /tmp)")
        entry = pwd.getpwnam(user)
        for path in (data, sockets, log):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    _run([str(bins / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"], user, log)
    for attempt in range(3):  # the free port may be taken between the probe and the start
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        try:
            _run([str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                 user, log)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    _run([str(bins / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, "bench"], user, log)
    (folder / "port").write_text(str(port))
    return f"postgresql+psycopg://{USER}@127.0.0.1:{port}/bench"


def stop(folder: Path) -> None:
    """Stop the cluster under `folder` (if it runs) and delete the folder."""
    bins, data = bindir(), folder / "data"
    if bins is not None and (data / "postmaster.pid").exists():
        subprocess.run([str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user=_owner(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


def new_folder() -> Path:
    """A fresh folder directly under the system's temporary directory: a pytest tmp_path lies under
    folders only root may enter, where an unprivileged server could not reach its data."""
    return Path(tempfile.mkdtemp(prefix="bench-postgres-"))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: pgcluster.py start|stop DIR")
    if sys.argv[1] == "start":
        print(f"export BENCH_TEST_POSTGRES_URL={start(Path(sys.argv[2]))}")
    else:
        stop(Path(sys.argv[2]))
