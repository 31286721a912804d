"""Serve the app under gunicorn's arbiter: one listening socket, supervised aiohttp workers.

The parent binds the port itself (a port in use is one line and a non-zero exit at
once, before the database is touched), then hands the socket to gunicorn's arbiter,
which forks `workers` aiohttp workers, replaces a worker that dies and stops them
all gracefully on SIGTERM, SIGINT or SIGHUP. A worker notices within a second when
its parent is gone and shuts down. Metrics use prometheus-client's multiprocess
mode, so whichever worker answers /metrics reports the service's totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.worker import GunicornWebWorker
from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from prometheus_client import Counter, multiprocess, values

from ingest.config import Config
from ingest.errors import ConfigError
from ingest.logs import where
from ingest.web.app import create_app
from ingest.web.keys import METRICS, POOL

log = structlog.get_logger("ingest.serving")
gunicorn_log = structlog.get_logger("gunicorn.error")

SHUTDOWN_TIMEOUT_SECONDS = 30  # SIGTERM: in-flight requests and the writer's drain get this long
KEEPALIVE_SECONDS = 75  # aiohttp's own default (gunicorn's 2 s is meant for a proxy in front)
BACKLOG = 2048  # gunicorn's default
POOL_SAMPLE_SECONDS = 1.0
GC_YOUNG_THRESHOLD = 20_000  # container allocations between young collections (Python: 700)
# gunicorn's arbiter stops the whole service when a worker exits with this code.
WORKER_BOOT_ERROR = 3
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Made by the first worker refused by the configuration (it prints the one line).
CONFIG_ERROR_MARK = "ingest-configuration-error"
PRIVATE_PREFIX = "ingest-metrics-"  # + the parent's pid: a killed parent's directory is found later


class ListenError(Exception):
    """The address cannot be listened on; the message is one line for the operator."""


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port now, or raise ListenError naming the address."""
    url = _url(host, port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        raise ListenError(f"cannot listen on {url}: unknown host {host}") from None
    listener = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR lets a restart bind while old connections sit in TIME_WAIT; it
        # never lets a second listener share the port (SO_REUSEPORT would, and split
        # the traffic between two services): a second `ingest serve` is refused here.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(BACKLOG)
    except OSError as exc:
        listener.close()
        raise ListenError(f"cannot listen on {url}: {_reason(exc)}") from None
    return listener


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            "the port is in use (another ingest serve, or another program, listens on it); "
            "choose another with `ingest serve --port N` (and `ingest try --url` to match)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


def serve(config: Config, dsn: str, pepper: str, listener: socket.socket, workers: int) -> int:
    """Run the arbiter and its workers on `listener` until stopped; the exit status (0 when stopped)."""
    metrics_dir, private = _metrics_dir()
    parent = os.getpid()
    try:
        # prometheus-client picks its value class (in memory, or the multiprocess files)
        # from the environment when first imported, which may have happened already:
        # pick again now that the directory is set, before any metric of ours exists.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

        restarts = Counter(
            "ingest_worker_restarts",
            "Workers that died and were replaced by the arbiter",
            registry=None,  # served from the multiprocess directory, like every metric
        )
        application = _Application(_options(listener, workers, restarts), _app_factory(config, dsn, pepper))
        code = _run(_Arbiter(application))
        configuration_refused = (metrics_dir / CONFIG_ERROR_MARK).exists()
    finally:
        if os.getpid() == parent and private:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if code == WORKER_BOOT_ERROR:
        if configuration_refused:
            return 2  # as every other command's configuration error; a worker printed it
        print(  # noqa: T201 - a human line for the terminal
            "ingest serve: a worker could not start (see worker_boot_failed in the log)", file=sys.stderr
        )
    return code


def _run(arbiter: _Arbiter) -> int:
    """Run the arbiter; a forked worker leaves here straight to its exit, never into our callers."""
    parent = os.getpid()
    code = 1
    try:
        arbiter.run()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        if os.getpid() != parent:
            # A worker is a fork of the arbiter, inside `ingest serve`'s context managers
            # (the embedded database among them): they belong to the parent, so the
            # worker must not unwind through them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


def _metrics_dir() -> tuple[Path, bool]:
    """The operator's PROMETHEUS_MULTIPROC_DIR (wiped), else a fresh private one. (dir, private)."""
    chosen = os.environ.get(MULTIPROC_ENV)
    if chosen:
        directory = Path(chosen)
        directory.mkdir(parents=True, exist_ok=True)
        # A previous run's files would add its counts to ours.
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        (directory / CONFIG_ERROR_MARK).unlink(missing_ok=True)
        return directory, False
    _sweep_orphaned_metrics_dirs()
    directory = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory, True


def _sweep_orphaned_metrics_dirs() -> None:
    """Remove private directories left by an `ingest serve` that was killed (SIGKILL skips cleanup)."""
    for directory in Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*-*"):
        pid = directory.name.removeprefix(PRIVATE_PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or directory.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
        except OSError:
            continue  # gone meanwhile, or a live process of another user


def _options(listener: socket.socket, workers: int, restarts: Any) -> dict[str, Any]:
    """The arbiter's settings, from our command line: no gunicorn.conf.py is read."""
    host, port = listener.getsockname()[:2]
    url = _url(host, port)

    def when_ready(_: Arbiter) -> None:
        log.info("listening", host=host, port=port, workers=workers, pid=os.getpid())
        plural = "s" if workers != 1 else ""
        print(f"listening on {url} ({workers} worker{plural})", file=sys.stderr)  # noqa: T201 - for people

    def child_exit(server: _Arbiter, worker: GunicornWebWorker) -> None:
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
        if not server.stopping and len(server.WORKERS) < server.num_workers:
            restarts.inc()
            log.warning("worker_replaced", pid=worker.pid)

    return {
        # The socket bound above, by file descriptor (gunicorn's fd:// form, as for
        # systemd socket activation): gunicorn then binds nothing itself.
        "bind": [f"fd://{listener.detach()}"],
        "workers": workers,
        "worker_class": _Worker,
        "graceful_timeout": SHUTDOWN_TIMEOUT_SECONDS,
        "keepalive": KEEPALIVE_SECONDS,
        "logger_class": _Log,
        "loglevel": "info",
        "accesslog": None,  # off: it would print client addresses
        "control_socket_disable": True,  # no gunicornc socket in $HOME shared by every instance
        "proc_name": "ingest",
        "when_ready": when_ready,
        "child_exit": child_exit,
    }


def _app_factory(config: Config, dsn: str, pepper: str) -> Callable[[], Awaitable[web.Application]]:
    async def build() -> web.Application:
        # Built in the worker, in its own event loop, after the fork.
        app = create_app(config, dsn, pepper)
        app.on_startup.append(_freeze_startup_heap)
        app.cleanup_ctx.append(_sample_pool)
        return app

    return build


async def _freeze_startup_heap(_: web.Application) -> None:
    """Move what start-up built (modules, phone metadata, the pool) out of the collector's way.

    Those objects live as long as the process; without this every full collection walks
    them all, a pause of tens of milliseconds under load that lands on p99 latency.
    A request's objects die with it (by reference count): the young generation is
    collected after GC_YOUNG_THRESHOLD allocations rather than Python's 700, so they
    are not collected (and promoted) while still in use, mid-request.
    """
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def _sample_pool(app: web.Application) -> AsyncIterator[None]:
    """Keep this worker's share of ingest_db_pool_in_use fresh (the gauge sums the live workers)."""

    async def sample() -> None:
        while True:
            pool = app[POOL]
            app[METRICS].pool_in_use.set(pool.get_size() - pool.get_idle_size())
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    task = asyncio.create_task(sample())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _Application(BaseApplication):  # type: ignore[misc] # gunicorn is untyped
    """gunicorn configured from a dict, loading our app factory."""

    def __init__(self, options: dict[str, Any], factory: Callable[[], Awaitable[web.Application]]) -> None:
        self._options = options
        self._factory = factory
        super().__init__()

    def load_config(self) -> None:
        """Apply our settings (a gunicorn BaseApplication reads nothing else)."""
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[[], Awaitable[web.Application]]:
        """The app factory, called in each worker."""
        return self._factory


class _Arbiter(Arbiter):  # type: ignore[misc] # gunicorn is untyped
    """gunicorn's arbiter; SIGHUP stops (our config is not reloaded), SIGUSR2 is refused."""

    stopping = False

    def stop(self, graceful: bool = True) -> None:
        """Stop the workers; their exits from here on are not restarts."""
        self.stopping = True
        super().stop(graceful)

    def reap_workers(self) -> None:
        """Reap exited workers; a second boot failure while already stopping is not a new halt."""
        try:
            super().reap_workers()
        except HaltServer:
            # gunicorn raises it from inside stop() too (its halt then ends in a traceback):
            # the stop in progress already ends the service, and the next call reaps the rest.
            if not self.stopping:
                raise

    def handle_hup(self) -> None:
        """A closed terminal: stop gracefully, as on SIGTERM (gunicorn would reload)."""
        raise StopIteration

    def handle_usr2(self) -> None:
        """Re-executing would bind the port again: not supported."""
        log.warning("signal_ignored", reason="SIGUSR2 re-exec is not supported; restart the service")


class _Worker(GunicornWebWorker):
    """aiohttp's gunicorn worker whose failure to start is one JSON line, not a traceback."""

    def init_process(self) -> None:
        """Run the worker; a start-up failure exits with gunicorn's boot-error code (the service stops)."""
        try:
            super().init_process()
        except SystemExit:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever stops a start, one JSON line and exit 3
            fields: dict[str, Any] = {"exc_type": type(exc).__name__, "where": where(exc), "pid": os.getpid()}
            if isinstance(exc, ConfigError):
                fields["reason"] = str(exc)  # names a key or a variable, never a value
            booted = self.booted
            # error, not exception: a traceback would quote values (and be dropped anyway).
            log.error("worker_boot_failed" if not booted else "worker_failed", **fields)  # noqa: TRY400
            if isinstance(exc, ConfigError) and _first_to_report():
                print(f"configuration error: {exc}", file=sys.stderr)  # noqa: T201 - as the CLI says it
            sys.exit(1 if booted else WORKER_BOOT_ERROR)


def _first_to_report() -> bool:
    """Whether this worker is the first to report a configuration error (the others stay quiet)."""
    try:
        os.close(os.open(Path(os.environ[MULTIPROC_ENV], CONFIG_ERROR_MARK), os.O_CREAT | os.O_EXCL))
    except OSError:
        return False
    return True


class _Log(glogging.Logger):  # type: ignore[misc] # gunicorn is untyped
    """gunicorn's (and the aiohttp worker's) logging as our JSON lines.

    A record keeps its message template (constant text from gunicorn or aiohttp) but
    not its arguments or traceback: those can quote a request or a client address.
    """

    def setup(self, cfg: Any) -> None:
        """No handlers of gunicorn's own: everything goes through structlog."""
        self.cfg = cfg

    def critical(self, msg: object, *_: object, **kwargs: Any) -> None:
        """Critical record."""
        _emit(50, msg, kwargs)

    def error(self, msg: object, *_: object, **kwargs: Any) -> None:
        """Error record."""
        _emit(40, msg, kwargs)

    def warning(self, msg: object, *_: object, **kwargs: Any) -> None:
        """Warning record."""
        _emit(30, msg, kwargs)

    def info(self, msg: object, *_: object, **kwargs: Any) -> None:
        """Info record."""
        _emit(20, msg, kwargs)

    def debug(self, msg: object, *_: object, **kwargs: Any) -> None:
        """Debug record (below our level: dropped)."""
        _emit(10, msg, kwargs)

    def exception(self, msg: object, *_: object, **kwargs: Any) -> None:
        """Error record of the exception being handled (its type only)."""
        kwargs.setdefault("exc_info", True)
        _emit(40, msg, kwargs)

    def log(self, lvl: int | str, msg: object, *_: object, **kwargs: Any) -> None:
        """Record at `lvl`."""
        level = self.LOG_LEVELS.get(lvl.lower(), 20) if isinstance(lvl, str) else lvl
        _emit(level, msg, kwargs)

    def access(self, *_: object, **__: object) -> None:
        """Access log: off."""

    def reopen_files(self) -> None:
        """No files of our own to reopen."""


def _emit(level: int, msg: object, kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"logger": "gunicorn.error", "pid": os.getpid()}
    if isinstance(msg, str):
        fields["message_template"] = msg
    exc_info = kwargs.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(msg, BaseException):
        exc_info = msg
    if isinstance(exc_info, BaseException):
        fields["exc_type"] = type(exc_info).__name__
    elif isinstance(exc_info, tuple) and exc_info[0] is not None:
        fields["exc_type"] = exc_info[0].__name__
    gunicorn_log.log(level, "server_log", **fields)
