"""Start and stop a real Covalent 0.240 server that touches nothing outside one directory.

Facts this relies on (read in Covalent 0.240's source, then checked by running it):

* Config. ``import covalent`` builds defaults from env vars, overlays
  ``$COVALENT_CONFIG_DIR/covalent.conf`` (file values win) and writes the result back.
  ``COVALENT_DATA_DIR`` -> ``dispatcher.results_dir``, ``workflow_data.base_dir`` (also read
  directly by server modules); ``COVALENT_DATABASE`` -> ``dispatcher.db_path``
  (``COVALENT_DATABASE_URL`` overrides it, so it is dropped); ``COVALENT_CACHE_DIR`` -> cache dirs
  and heartbeat file; ``COVALENT_LOGDIR`` -> every ``log_dir``; ``COVALENT_EXECUTOR_DIR`` ->
  ``sdk.executor_dir`` (else ``~/.config/covalent/executor_plugins`` is created anyway);
  ``COVALENT_DISPATCH_CACHE_DIR``/``COVALENT_RESULTS_DIR`` -> client staging/download dirs;
  ``COVALENT_SVC_PORT``/``COVALENT_DISPATCHER_ADDR`` -> ``dispatcher.port``/``.address``;
  ``COVALENT_DISABLE_DASK=1`` -> no cluster, default executor ``"local"``. ``[executors.local]``
  and ``[executors.dask]`` take ``cache_dir``/``workdir`` from ``XDG_CACHE_HOME`` or ``~/.cache``.
  As a stale conf beats the environment, both the variables and every path key are written.
* Launch. ``covalent start`` runs DB migrations, then ``sh -c "python app.py --port P"`` in
  ``covalent_ui/``, polls ``localhost:P`` with no deadline and silently takes the next port if P
  is busy. Here one child in its own session does both (migrations, then app.py via runpy), so we
  own its pid and group and see an early exit at once. ``dispatcher.port`` must be in the
  server's conf too: the asset URLs it hands to clients are built from it.
* No cluster. ``executor="local"`` runs (LocalExecutor forks a process pool in the server). The
  CLIENT fixes the default executor at ``import covalent``: ``"dask"`` unless its
  ``sdk.no_cluster`` is ``"true"`` or ``COVALENT_DISABLE_DASK=1``; such nodes, the lattice's
  ``:postprocess:`` node included (``workflow_executor`` defaults to ``executor``), FAIL here with
  "missing port number in address ''". So pass ``executor``/``workflow_executor`` explicitly,
  or call :func:`isolate_client_config` before importing covalent.
* Stop. ``covalent stop`` SIGINTs ``children()[0]`` of the pid-filed ``sh`` wrapper, which here
  would be a pool worker, so it is not used. The pool workers inherit uvicorn's SIGTERM handler
  and ignore SIGTERM: they are SIGKILLed first (while the server can reap them), then the server
  gets SIGTERM; uvicorn's shutdown cancels running dispatches, which calls executors' ``cancel()``.
* Executor sections. ``executor="byoc"`` travels as ``("byoc", {})`` and is resolved in the
  SERVER: ``get_executor("byoc")`` re-reads the server's conf and calls ``Cls(**[executors.byoc])``;
  an executor object is built the same way, then overwritten by the client's ``to_dict()``. The
  client's conf is never read for this, so ``executors=`` is what makes ``executor="byoc"`` work.
* Client address. ``ct.dispatch``/``get_result``/``cancel`` take ``dispatcher_addr`` as a URL
  with scheme (``http://127.0.0.1:P``), else the client's config; ``get_result(wait=True)`` has
  no deadline, hence :meth:`CovalentServer.result`.
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


_SUBDIRS = ("config", "data", "cache", "logs", "results", "dispatches", "executor_plugins", "workdir")


def _dirs(root: Path) -> dict[str, Path]:
    dirs = {name: root / name for name in _SUBDIRS}
    dirs["db"] = root / "db" / "dispatcher_db.sqlite"
    return dirs


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
        "sdk": {"log_dir": logs, "executor_dir": str(d["executor_plugins"]), "no_cluster": "true",
                "dispatch_cache_dir": str(d["dispatches"]), "results_dir": str(d["results"])},
        "dispatcher": {"address": HOST, "port": port, "cache_dir": cache, "results_dir": data,
                       "log_dir": logs, "db_path": str(d["db"]),
                       "heartbeat_file": str(d["cache"] / "heartbeat")},
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
