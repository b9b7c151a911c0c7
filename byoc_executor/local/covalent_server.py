"""Start and stop a real Covalent 0.240 server that touches nothing outside one directory.

Facts this module relies on (read from Covalent 0.240's source, then checked by running it):

* Configuration. ``covalent._shared_files.config`` builds its defaults from environment variables
  when it is first imported, then overlays ``$COVALENT_CONFIG_DIR/covalent.conf`` (file values
  win) and writes the merged result back. Which variable feeds which key:
  ``COVALENT_CONFIG_DIR`` -> the conf file; ``COVALENT_DATA_DIR`` -> ``dispatcher.results_dir``
  and ``workflow_data.base_dir`` (several server modules also read the variable directly);
  ``COVALENT_DATABASE`` -> ``dispatcher.db_path`` (``COVALENT_DATABASE_URL``, if set, overrides
  the path outright, so it is removed from the server's environment); ``COVALENT_CACHE_DIR`` ->
  ``dispatcher.cache_dir``, ``dask.cache_dir`` and the heartbeat file; ``COVALENT_LOGDIR`` -> all
  ``log_dir`` keys; ``COVALENT_EXECUTOR_DIR`` -> ``sdk.executor_dir`` (else ``~/.config/covalent/
  executor_plugins`` is created even when ``COVALENT_CONFIG_DIR`` is set);
  ``COVALENT_DISPATCH_CACHE_DIR`` / ``COVALENT_RESULTS_DIR`` -> the client's staging and download
  dirs; ``COVALENT_SVC_PORT`` / ``COVALENT_DISPATCHER_ADDR`` -> ``dispatcher.port`` / ``.address``;
  ``COVALENT_DISABLE_DASK=1`` -> no cluster and default executor ``"local"``. The built-in
  ``local``/``dask`` executor sections take ``cache_dir``/``workdir`` from ``XDG_CACHE_HOME`` or
  ``~/.cache``, so they are written explicitly. Because a stale conf file beats the environment,
  both are set: the variables AND every path key in a fresh conf file.
* Launch. ``covalent start`` runs DB migrations, then ``sh -c "python app.py --port P ..."`` in
  ``covalent_ui/``, polls ``http://localhost:P`` with no deadline, and silently moves to the next
  port if P is taken. This module does the same two steps itself in ONE child process in its own
  session (migrations, then ``app.py`` via runpy) so that it owns the pid and process group, sees
  an early exit at once, and never lands on somebody else's port. ``dispatcher.port`` must be in
  the server's conf, not only on the command line: asset URLs handed to clients are built from it.
* No cluster. With ``--no-cluster`` electrons with ``executor="local"`` run (LocalExecutor forks a
  ProcessPoolExecutor inside the server). The CLIENT decides an electron's default executor at
  ``import covalent`` time: ``"dask"`` unless the client's ``sdk.no_cluster`` is ``"true"`` or
  ``COVALENT_DISABLE_DASK=1``; a "dask" node (including the lattice's ``:postprocess:`` node, whose
  ``workflow_executor`` defaults to the same) then FAILS on this server with "missing port number
  in address ''". Hence :func:`isolate_client_config` sets ``COVALENT_DISABLE_DASK=1``.
* Stop. ``covalent stop`` expects the pid file of the ``sh`` wrapper and would SIGINT
  ``children()[0]``, which here is a pool worker, so it is not used. SIGTERM to the server makes
  uvicorn shut down gracefully (its lifespan cancels running dispatches, which calls the
  executors' ``cancel()``); the pool workers inherit uvicorn's SIGTERM handler and ignore SIGTERM,
  so the group is SIGKILLed after a grace period.
* Executor sections. An electron's ``executor="byoc"`` string travels as ``("byoc", {})`` and is
  resolved in the SERVER: ``_executor_manager.get_executor("byoc")`` re-reads the server's conf
  file and calls ``ByocExecutor(**[executors.byoc])``; an executor given as an object is built the
  same way and then overwritten with the client's ``to_dict()``. The client's conf is never
  consulted, so ``executors=`` here is what makes ``executor="byoc"`` work.
* Client address. ``ct.dispatch``/``ct.get_result``/``ct.cancel`` take ``dispatcher_addr`` as a
  full URL (``http://127.0.0.1:P``; without the scheme requests fails); without it they use the
  client's ``dispatcher.address``/``port``. ``get_result(wait=True)`` has no deadline, hence
  :meth:`CovalentServer.result`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Mapping

import psutil
import toml

__all__ = ["CovalentServer", "ensure_covalent_server", "free_port", "isolate_client_config"]

HOST = "127.0.0.1"
_READY_PATH = "/api/v2/dispatches?count=1&status_only=true"
_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}

# Runs inside the server process: the migrations `covalent start` would run, then app.py exactly
# as `python app.py --port P --no-cluster` (cwd is covalent_ui/, which app.py needs).
_BOOTSTRAP = """
import runpy, sys
from covalent_dispatcher._db.datastore import DataStore
DataStore.factory().run_migrations(logging_enabled=False)
sys.argv = ["app.py", "--port", sys.argv[1], "--no-cluster"]
runpy.run_path("app.py", run_name="__main__")
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _answers(url: str, timeout: float = 2.0) -> bool:
    """True if a Covalent dispatcher answers the dispatch-list endpoint at ``url``."""
    try:
        with urllib.request.urlopen(url + _READY_PATH, timeout=timeout) as resp:
            return resp.status == 200 and "dispatches" in json.loads(resp.read())
    except (OSError, ValueError):  # refused, timed out, HTTP error, or not JSON
        return False


def _dirs(root: Path) -> dict[str, Path]:
    return {
        "config": root / "config",
        "data": root / "data",
        "db": root / "db" / "dispatcher_db.sqlite",
        "cache": root / "cache",
        "logs": root / "logs",
        "results": root / "results",
        "dispatches": root / "dispatches",
        "executor_plugins": root / "executor_plugins",
        "workdir": root / "workdir",
    }


def _covalent_env(d: Mapping[str, Path]) -> dict[str, str]:
    return {
        "COVALENT_CONFIG_DIR": str(d["config"]),
        "COVALENT_DATA_DIR": str(d["data"]),
        "COVALENT_DATABASE": str(d["db"]),
        "COVALENT_CACHE_DIR": str(d["cache"]),
        "COVALENT_HEARTBEAT_FILE": str(d["cache"] / "heartbeat"),
        "COVALENT_LOGDIR": str(d["logs"]),
        "COVALENT_RESULTS_DIR": str(d["results"]),
        "COVALENT_DISPATCH_CACHE_DIR": str(d["dispatches"]),
        "COVALENT_EXECUTOR_DIR": str(d["executor_plugins"]),
        "COVALENT_DISABLE_DASK": "1",
    }


def _conf(d: Mapping[str, Path], port: int) -> dict[str, Any]:
    logs, cache, data = str(d["logs"]), str(d["cache"]), str(d["data"])
    local = {"cache_dir": cache, "workdir": str(d["workdir"])}
    return {
        "sdk": {
            "log_dir": logs,
            "executor_dir": str(d["executor_plugins"]),
            "no_cluster": "true",
            "dispatch_cache_dir": str(d["dispatches"]),
            "results_dir": str(d["results"]),
        },
        "dispatcher": {
            "address": HOST,
            "port": port,
            "cache_dir": cache,
            "results_dir": data,
            "log_dir": logs,
            "db_path": str(d["db"]),
            "heartbeat_file": str(d["cache"] / "heartbeat"),
        },
        "dask": {"cache_dir": cache, "log_dir": logs},
        "workflow_data": {"storage_type": "local", "base_dir": data},
        "user_interface": {"address": HOST, "port": port, "log_dir": logs},
        "executors": {"local": dict(local), "dask": dict(local)},
    }


def _write_conf(d: Mapping[str, Path], conf: dict[str, Any]) -> None:
    for key, path in d.items():
        (path.parent if key == "db" else path).mkdir(parents=True, exist_ok=True)
    (d["config"] / "covalent.conf").write_text(toml.dumps(conf))


def isolate_client_config(home: Path, server_port: int | None = None) -> dict[str, str]:
    """Point THIS process's Covalent client at directories under ``home / "client"``.

    Call it before anything imports ``covalent`` (e.g. at the top of ``tests/conftest.py``):
    ``import covalent`` reads these variables once, creates the config, log, executor-plugin and
    dispatch-cache dirs, writes the conf file and fixes the default executor. Afterwards the
    client uses ``"local"`` as its default executor and never reads or writes
    ``~/.config/covalent``, ``~/.cache/covalent`` or ``~/.local/share/covalent``.

    Args:
        home: Directory to hold the client's files (created if missing).
        server_port: Port for the client's default dispatcher address. When None, port 0 is
            written, so a call that forgets ``dispatcher_addr`` fails with "connection refused"
            instead of reaching a server the user runs on 48008.

    Returns:
        The environment variables that were set.

    Raises:
        RuntimeError: If ``covalent`` was already imported with a different config file.
    """
    d = _dirs(Path(home).resolve() / "client")
    env = _covalent_env(d)
    cfg = sys.modules.get("covalent._shared_files.config")
    if cfg is not None and Path(cfg._config_manager.config_file) != d["config"] / "covalent.conf":
        raise RuntimeError(
            "covalent was imported before isolate_client_config(); it already uses "
            f"{cfg._config_manager.config_file}"
        )
    _write_conf(d, _conf(d, server_port or 0))
    os.environ.update(env)
    return env


class CovalentServer:
    """A Covalent server on 127.0.0.1 whose config, DB, data, cache and logs live under ``home``.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (always safe to call).
    """

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        executors: dict[str, dict] | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        """Describe the server; nothing is started or written until :meth:`start`.

        Args:
            home: Root directory for every file the server writes.
            port: TCP port; a free one is chosen when None.
            executors: Sections for the server's covalent.conf, e.g.
                ``{"byoc": {"s3_bucket_name": "b"}}`` becomes ``[executors.byoc]``.
            env: Extra environment variables for the server (applied last).
            start_timeout: Seconds :meth:`start` waits for the server to answer.
        """
        self.home = Path(home).resolve()
        self.port = port or free_port()
        self.executors = executors or {}
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.dirs = _dirs(self.home)
        self.log_path = self.dirs["logs"] / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"``: what Covalent's ``dispatcher_addr`` arguments need."""
        return f"http://{self.address}"

    def __enter__(self) -> "CovalentServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def server_env(self) -> dict[str, str]:
        """The environment the server process gets."""
        env = dict(os.environ)
        # A database URL would override our DB path; "any interface" would bind 0.0.0.0.
        for name in ("COVALENT_DATABASE_URL", "COVALENT_SERVER_IFACE_ANY"):
            env.pop(name, None)
        env.update(_covalent_env(self.dirs))
        env.update(
            COVALENT_SVC_PORT=str(self.port),
            COVALENT_DISPATCHER_ADDR=HOST,
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def write_config(self) -> Path:
        """Write the server's covalent.conf (paths, port, executor sections); return its path."""
        conf = _conf(self.dirs, self.port)
        for name, section in self.executors.items():
            conf["executors"].setdefault(name, {}).update(section)
        _write_conf(self.dirs, conf)
        return self.dirs["config"] / "covalent.conf"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's stdout/stderr log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    def start(self) -> "CovalentServer":
        """Start the server and wait until it answers dispatch queries.

        Returns:
            self.

        Raises:
            RuntimeError: If already started, if the port is taken, or if the server exits early.
            TimeoutError: If it does not answer within ``start_timeout``; the server is stopped.
        """
        if self.proc is not None:
            raise RuntimeError(f"server already started (pid {self.proc.pid})")
        # Without this check the readiness poll could be answered by someone else's server.
        if not _port_is_free(self.port):
            raise RuntimeError(f"port {self.port} on {HOST} is already in use")
        self.write_config()
        app_dir = Path(find_spec("covalent_ui").submodule_search_locations[0])
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(self.port)],
                cwd=app_dir,
                env=self.server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can kill every child
            )
        deadline = time.monotonic() + self.start_timeout
        while not _answers(self.url, timeout=1.0):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"Covalent server exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"Covalent server not up at {self.url} after {self.start_timeout}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server and every process in its group; safe after a failed or no start.

        Args:
            grace: Seconds for the graceful shutdown before the group is killed.

        Raises:
            RuntimeError: If processes of the group survive SIGKILL.
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # leader of its own session, so pid == pgid
        if proc.poll() is None:
            # Kill the server's children (LocalExecutor's pool workers ignore SIGTERM) while the
            # server still lives to reap them; orphaned, they would stay zombies where init
            # does not reap (as in these sandboxes).
            for pid in _group_members(pgid):
                if pid != pgid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            proc.send_signal(signal.SIGTERM)  # uvicorn's graceful shutdown
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):
            if not _group_members(pgid):
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while _group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
        proc.wait(timeout=5)  # reap the leader if the group kill took it
        left = _group_members(pgid)
        if left:
            raise RuntimeError(f"processes of Covalent server group {pgid} survived: {left}")

    # -- client side (runs in the caller's process) --------------------------------------------

    def dispatch(self, workflow: Callable, *args: Any, **kwargs: Any) -> str:
        """Dispatch ``workflow(*args, **kwargs)`` to this server; return the dispatch id."""
        import covalent as ct

        return ct.dispatch(workflow, dispatcher_addr=self.url)(*args, **kwargs)

    def status(self, dispatch_id: str) -> str:
        """The dispatch's status string, e.g. ``"RUNNING"``."""
        import covalent as ct

        return str(ct.get_result(dispatch_id, dispatcher_addr=self.url, status_only=True)["status"])

    def result(self, dispatch_id: str, timeout: float = 120.0, poll: float = 0.2) -> Any:
        """Wait for the dispatch to end and return its ``covalent`` Result.

        Assets are downloaded under ``home/results/<dispatch_id>``.

        Raises:
            TimeoutError: If the dispatch is not COMPLETED/FAILED/CANCELLED within ``timeout``.
            RuntimeError: If the server process died while waiting.
        """
        import covalent as ct

        deadline = time.monotonic() + timeout
        while (status := self.status(dispatch_id)) not in _TERMINAL:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Covalent server died:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dispatch {dispatch_id} still {status} after {timeout}s")
            time.sleep(poll)
        return ct.get_result(
            dispatch_id,
            dispatcher_addr=self.url,
            results_dir=str(self.dirs["results"] / dispatch_id),
        )

    def cancel(self, dispatch_id: str, task_ids: list[int] | None = None) -> str:
        """Ask the server to cancel a dispatch, or only ``task_ids`` of it; return its reply."""
        import covalent as ct

        return ct.cancel(dispatch_id, task_ids=task_ids or [], dispatcher_addr=self.url)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``."""
    members = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.info["pid"]) == pgid:
                members.append(p.info["pid"])
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue  # exited while we looked
    return members


def ensure_covalent_server(
    home: Path,
    executors: dict[str, dict] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, CovalentServer | None]:
    """Use the Covalent server the user's config names if it answers, else start an isolated one.

    Args:
        home: Where an isolated server keeps its files if one has to be started.
        executors: Executor sections for a started server (a running one keeps its own).
        env: Extra environment for a started server.

    Returns:
        ``("host:port", None)`` for the user's running server, or ``(server.address, server)``
        for a started one, which the caller must ``stop()``.
    """
    from covalent._shared_files.config import get_config

    host, port = str(get_config("dispatcher.address")), int(get_config("dispatcher.port"))
    if _answers(f"http://{host}:{port}"):
        return f"{host}:{port}", None
    server = CovalentServer(home, executors=executors, env=env).start()
    return server.address, server
