"""The embedded PostgreSQL + PostGIS cluster: a private server in the checkout's data folder.

With no ``DATABASE_URL`` the platform creates (once) and starts this cluster on demand: data in
``<data_dir>/pg``, a unix socket in ``<data_dir>/run``, a free loopback port. PostgreSQL refuses
to run as root, so when we are root the server runs as the unprivileged ``postgres`` user that
Debian's package creates (or ``nobody``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from layers.errors import SetupError

DB_USER = "blueprint"
INSTALL_HINT = (
    "install PostgreSQL 15 with PostGIS 3: `apt-get install postgresql-15-postgis-3` on Debian, "
    "or `conda env create -f environment.yml`"
)

# A private cluster tuned for bulk loads and analysis on one machine. wal_level=minimal lets a
# COPY into a table created in the same transaction skip WAL, which is most of ingest's cost.
SERVER_CONFIG = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "60",
    "shared_buffers": "1GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "synchronous_commit": "off",
    "jit": "off",
    "max_parallel_workers_per_gather": "2",
    "random_page_cost": "1.1",
    "logging_collector": "off",
    "timezone": "'UTC'",
}


@dataclass(frozen=True)
class Cluster:
    """Paths of one embedded cluster."""

    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def socket_dir(self) -> Path:
        # A unix socket path must stay under ~107 bytes; deep checkouts fall back to /tmp.
        run = self.data_dir / "run"
        if len(str(run)) > 80:
            # zlib.crc32, not hash(): str hashes change per process, and every process must agree.
            return Path(tempfile.gettempdir()) / f"blueprint-{zlib.crc32(str(run).encode()):08x}"
        return run

    @property
    def port_file(self) -> Path:
        return self.data_dir / "port"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{DB_USER}@/{database}?host={self.socket_dir}&port={self.port}"


def find_bindir() -> Path:
    """The PostgreSQL 15 server binaries: Debian's location, then whatever is on PATH (conda)."""
    for candidate in (Path("/usr/lib/postgresql/15/bin"),):
        if (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise SetupError(f"PostgreSQL server not found: {INSTALL_HINT}")


def _postgis_available(bindir: Path) -> bool:
    out = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    )
    sharedir = Path(out.stdout.strip()) if out.returncode == 0 else Path("/usr/share/postgresql/15")
    return (sharedir / "extension" / "postgis.control").exists()


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root (else None: run as us)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise SetupError("running as root and no unprivileged 'postgres' or 'nobody' user exists")


def _run(cmd: list[str], user: pwd.struct_passwd | None, **kwargs) -> subprocess.CompletedProcess:
    def demote() -> None:
        if user is not None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    if user is not None:
        env["HOME"] = user.pw_dir
    return subprocess.run(cmd, preexec_fn=demote, env=env, capture_output=True, text=True, **kwargs)


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _chown(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """The server user must be able to enter every folder above its data (a checkout under /root,
    mode 0700, cannot be): say so in one line instead of letting initdb fail obscurely."""
    for folder in (path, *path.parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid or st.st_mode & 0o001 or (st.st_gid == user.pw_gid and st.st_mode & 0o010):
            continue
        raise SetupError(f"the database server runs as {user.pw_name!r}, who cannot enter {folder}: "
                         f"move the checkout (or set BLUEPRINT_DATA_DIR) outside it, or `chmod o+x {folder}`")


def init_cluster(cluster: Cluster, bindir: Path, user: pwd.struct_passwd | None) -> bool:
    """Create the cluster once; return True when it was created now."""
    if (cluster.pgdata / "PG_VERSION").exists():
        return False
    cluster.data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _check_reachable(cluster.data_dir, user)
    cluster.pgdata.mkdir(mode=0o700, exist_ok=True)
    _chown(cluster.pgdata, user)
    result = _run(
        [str(bindir / "initdb"), "-D", str(cluster.pgdata), "-U", DB_USER, "--auth=trust",
         "--encoding=UTF8", "--locale=C.UTF-8"],
        user,
    )
    if result.returncode != 0:
        shutil.rmtree(cluster.pgdata, ignore_errors=True)
        raise SetupError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
    with open(cluster.pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# One Blueprint embedded cluster\n")
        for key, value in SERVER_CONFIG.items():
            conf.write(f"{key} = {value}\n")
    return True


def is_running(cluster: Cluster, bindir: Path, user: pwd.struct_passwd | None) -> bool:
    if not (cluster.pgdata / "PG_VERSION").exists():
        return False
    status = _run([str(bindir / "pg_ctl"), "status", "-D", str(cluster.pgdata)], user)
    return status.returncode == 0


def start(cluster: Cluster) -> tuple[bool, bool]:
    """Create (once) and start the cluster (``pg_ctl start -w``: it accepts connections on return).

    Databases are created by ``layers.db.ensure_database`` (``blueprint db up`` migrates them).

    Returns
    -------
    (created, started): whether the cluster was created now and whether it was started now.
    """
    bindir = find_bindir()
    if not _postgis_available(bindir):
        raise SetupError(f"PostGIS is not installed for PostgreSQL 15: {INSTALL_HINT}")
    user = _server_user()
    created = init_cluster(cluster, bindir, user)
    if is_running(cluster, bindir, user):
        return created, False

    if not cluster.port_file.exists() or not _port_is_free(cluster.port):
        cluster.port_file.write_text(str(free_port()))
    cluster.socket_dir.mkdir(parents=True, exist_ok=True)
    _chown(cluster.socket_dir, user)
    cluster.log_file.touch()
    _chown(cluster.log_file, user)
    options = f"-p {cluster.port} -k {cluster.socket_dir}"
    result = _run(
        [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(cluster.pgdata),
         "-l", str(cluster.log_file), "-o", options],
        user,
    )
    if result.returncode != 0:
        tail = cluster.log_file.read_text(errors="replace").strip().splitlines()[-3:]
        raise SetupError(f"embedded PostgreSQL did not start: {' | '.join(tail)}")
    return created, True


def stop(cluster: Cluster) -> bool:
    """Stop the cluster; return whether it was running."""
    bindir = find_bindir()
    user = _server_user()
    if not is_running(cluster, bindir, user):
        return False
    _run([str(bindir / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(cluster.pgdata)], user)
    return True
