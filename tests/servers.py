"""Real MinIO and PostgreSQL servers for integration tests: loopback port, temp dir, stopped at the end.

No mocks: the tests talk to the same servers production uses. A missing binary makes the tests
fail when ``CI=true`` (CI must prove the servers ran) and skip elsewhere. Every start and stop is
announced on stderr (conftest lifts pytest's capture for it) so CI logs show which server ran on which port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

MINIO_USER = "digitize-test"
MINIO_PASSWORD = "digitize-test-secret"
PG_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"), Path("/usr/lib/postgresql/17/bin")]
START_TIMEOUT = 60.0


def announce(message: str) -> None:
    print(f"\n[test servers] {message}", file=sys.stderr, flush=True)


def missing(what: str) -> None:
    """Fail in CI (the servers must really run there), skip on a developer machine."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: integration tests must not be skipped)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s")


def minio_binary() -> Path:
    default = Path.home() / ".cache" / "digitize" / "bin" / "minio"
    return Path(os.environ.get("DIGITIZE_MINIO_BIN") or default)


@dataclass
class MinioServer:
    binary: Path
    data_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, bucket: str) -> str:
        return f"s3://{self.endpoint}/{bucket}"

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"MinIO exited with code {self.process.returncode} before becoming ready")
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/minio/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self) -> "MinioServer":
        self.port = self.port or free_port()
        env = dict(os.environ, MINIO_ROOT_USER=MINIO_USER, MINIO_ROOT_PASSWORD=MINIO_PASSWORD,
                   MINIO_BROWSER="off", MINIO_UPDATE="off")
        log = open(self.data_dir.parent / f"minio-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "server", str(self.data_dir), "--address", self.endpoint, "--quiet"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, f"MinIO on {self.endpoint}")
        announce(f"MinIO {self.binary} started on {self.endpoint} (pid {self.process.pid}, data {self.data_dir})")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            announce(f"MinIO on {self.endpoint} stopped (pid {self.process.pid})")


def start_minio(base: Path) -> MinioServer:
    binary = minio_binary()
    if not binary.is_file():
        missing(f"MinIO binary not found at {binary} (set DIGITIZE_MINIO_BIN)")
    data = base / "minio-data"
    data.mkdir(parents=True, exist_ok=True)
    return MinioServer(binary, data).start()


def pg_bin_dir() -> Path | None:
    found = next((d for d in PG_BIN_DIRS if (d / "initdb").is_file()), None)
    if found is None and shutil.which("initdb"):
        found = Path(shutil.which("initdb")).parent
    return found


@dataclass
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int = 0

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool as the postgres user: the server refuses to run as root."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], check=True, capture_output=True, text=True)

    def start(self) -> "PostgresServer":
        self.port = self.port or free_port()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        self._pg_ctl_start()
        announce(f"PostgreSQL {self.bin_dir} started on 127.0.0.1:{self.port} (socket dir {self.base})")
        return self

    def _pg_ctl_start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.base / "server.log"),
                  "-o", options, "-w", "-t", str(int(START_TIMEOUT)), "start")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (fast: open connections are cut), stay down a while, start it again on the same port."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        self._pg_ctl_start()
        announce(f"PostgreSQL on 127.0.0.1:{self.port} restarted after {down_seconds:.0f} s down")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            announce(f"PostgreSQL on 127.0.0.1:{self.port} stopped")
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="digitize-pg-"))
    base.chmod(0o755)
    return PostgresServer(bin_dir, base).start()


@dataclass
class RedisServer:
    """Debian's redis-server on loopback with an append-only file, so a restart keeps the queue."""

    base: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {self.process.returncode} before becoming ready")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> "RedisServer":
        self.port = self.port or free_port()
        self.base.mkdir(parents=True, exist_ok=True)
        log = open(self.base / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.base), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--protected-mode", "yes", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, f"Redis on 127.0.0.1:{self.port}")
        announce(f"Redis {shutil.which('redis-server')} started on 127.0.0.1:{self.port} "
                 f"(pid {self.process.pid}, dir {self.base})")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes its append-only file and exits
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            announce(f"Redis on 127.0.0.1:{self.port} stopped (pid {self.process.pid})")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
        announce(f"Redis on 127.0.0.1:{self.port} restarted after {down_seconds:.0f} s down")


def start_redis(base: Path) -> RedisServer:
    if shutil.which("redis-server") is None:
        missing("redis-server not found; apt-get install redis-server (scripts/setup.sh does)")
    return RedisServer(base).start()
