"""Helpers of the fault tests: private Redis and PostgreSQL servers a test may stop (never the
machine's shared ones), Celery workers as real subprocesses, a storage that fails for N writes, a
generator that can be held mid-task, and polling with a deadline."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from glob import glob
from pathlib import Path
from typing import Any

from django.core.files.storage import FileSystemStorage

ROOT = Path(__file__).resolve().parent.parent
# This helper's port range (8350-8359), so parallel sessions never collide.
FAULT_REDIS_PORT = 8350
FAULT_POSTGRES_PORT = 8352
UNREACHABLE_BROKER = "redis://127.0.0.1:8359/0"  # nothing listens there


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- servers a test may stop ------------------------------------------------------------------------

class RedisServer:
    """A redis-server of the test's own, without persistence (a restart loses its messages, as a
    crashed production broker without AOF would)."""

    def __init__(self, port: int = FAULT_REDIS_PORT):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.folder = Path(tempfile.mkdtemp(prefix="fault-redis-"))
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; stop what listens there")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 20, f"redis on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=20)
            self.process = None
        wait_until(lambda: not port_open(self.port), 10, f"redis on {self.port} to stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def postgres_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb in a temp folder, as the postgres user when
    run as root, since initdb refuses root)."""

    def __init__(self, port: int = FAULT_POSTGRES_PORT):
        self.port = port
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL binaries in /usr/lib/postgresql/*/bin")
        self.folder = Path(tempfile.mkdtemp(prefix="fault-pg-"))
        self.data = self.folder / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        return self

    def start(self) -> None:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; stop what listens there")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                        "-c synchronous_commit=off -c full_page_writes=off", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every connection (what a restart does to the clients); ``immediate`` is a crash."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                        "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True, timeout=60)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


# -- the test process's Celery app on another broker -------------------------------------------------

@contextlib.contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (what services.enqueue uses) at ``url`` for a while."""
    from config.celery import app

    def reset_pools() -> None:
        # Drop the app's references only: kombu keeps pools per connection URL in a global registry
        # (closing one here would hand a closed pool to the next user of that URL).
        app._pool = None
        with contextlib.suppress(AttributeError, KeyError):
            app.__dict__["amqp"]._producer_pool = None

    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    saved_env = os.environ.get("CELERY_BROKER_URL")
    reset_pools()
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_url = url
    if url.startswith("redis"):
        app.conf.broker_transport_options = {"socket_connect_timeout": 1, "socket_timeout": 5, "visibility_timeout": 3600}
    try:
        yield
    finally:
        reset_pools()
        app.conf.broker_url, app.conf.broker_transport_options = saved
        if saved_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_env


# -- Celery workers as subprocesses ------------------------------------------------------------------

def database_url(settings_dict: dict[str, Any]) -> str:
    """The URL of the database the test process uses (the test database), for a subprocess."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    return f"postgres://{user}@{settings_dict.get('HOST') or '127.0.0.1'}:{settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}"


def subprocess_env(database: str, broker: str, media: Path, signing: Path, stackgan: dict[str, Any],
                   maintenance_queue: str, storage_backend: str | None = None,
                   storage_options: dict[str, Any] | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "STACKGAN_", "FAULT_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "tests.fault_settings",
        # Workers refuse the published development key with DEBUG off, as a deployment's should.
        "DJANGO_SECRET_KEY": FAULT_SECRET_KEY,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "DJANGO_MEDIA_ROOT": str(media),
        "DJANGO_STORAGE_BACKEND": storage_backend or "django.core.files.storage.FileSystemStorage",
        "DJANGO_STORAGE_OPTIONS": json.dumps({"location": str(media), **(storage_options or {})}),
        "STACKGAN_VAR_DIR": str(media.parent / "worker-var"),
        "STACKGAN_MAINTENANCE_QUEUE": maintenance_queue,
        "STACKGAN_MAINTENANCE_INTERVAL": "1",
        # Generated files go to the app's private storage (STACKGAN["STORAGE"]), not Django's default one.
        "FAULT_STACKGAN": json.dumps({**stackgan, "SIGNER_OPTIONS": {"folder": str(signing)},
                                      "STORAGE": storage_backend or "django.core.files.storage.FileSystemStorage",
                                      "STORAGE_OPTIONS": {"location": str(media), **(storage_options or {})}}),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(extra or {}),
    })
    return env


FAULT_SECRET_KEY = secrets.token_urlsafe(50)


class CeleryWorker:
    """``celery -A config worker`` as a subprocess, so it can be killed for real."""

    def __init__(self, env: dict[str, str], queues: list[str], log: Path, pool: str = "solo", concurrency: int = 1,
                 beat: bool = False, name: str = "fault"):
        self.log = log
        self.name = f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h"
        args = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", ",".join(queues), "--pool", pool,
                "-c", str(concurrency), "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", self.name]
        if beat:
            args += ["-B", "-s", str(log.parent / f"beat-schedule-{time.monotonic_ns()}")]
        self.handle = open(log, "ab")  # noqa: SIM115 (kept open for the process's life)
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, timeout: float = 90) -> CeleryWorker:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.tail()}")
            return " ready." in self.log.read_text(errors="replace")
        wait_until(ready, timeout, f"celery worker {self.name} to be ready")
        return self

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def children(self) -> list[int]:
        """The pool's child processes (prefork)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        """SIGKILL: no cleanup, no ack, as the out-of-memory killer does it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.handle.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()


# -- fault injection that cannot be produced for real on a shared machine ----------------------------

class FailingStorage(FileSystemStorage):
    """A disk that is full for the next N writes: each failing write leaves half a file behind, as
    a real ENOSPC does. N lives in a file (``failures_file``), so a test and a worker subprocess
    share it. A full disk cannot be produced for real here without root mounts shared by everyone."""

    def __init__(self, failures_file: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.failures_file = Path(failures_file) if failures_file else None

    def _take_failure(self) -> bool:
        """The file holds "FAIL" or "SKIP FAIL": let SKIP writes through, then fail FAIL of them."""
        if self.failures_file is None or not self.failures_file.exists():
            return False
        numbers = [int(n) for n in self.failures_file.read_text().split()] or [0]
        skip, fail = (0, numbers[0]) if len(numbers) == 1 else numbers[:2]
        if skip > 0:
            self.failures_file.write_text(f"{skip - 1} {fail}")
            return False
        if fail <= 0:
            return False
        self.failures_file.write_text(f"0 {fail - 1}")
        return True

    def _save(self, name: str, content: Any) -> str:
        if self._take_failure():
            path = Path(self.path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content.read()
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return super()._save(name, content)


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder``, relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
