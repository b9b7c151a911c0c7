"""A real, isolated Covalent server: start, dispatch, failures, cancellation, stop.

The "probe" executor below is written into the server's executor-plugin dir and configured only
through ``CovalentServer(executors=...)``: it shows that a string ``executor="probe"`` is built
from the SERVER's covalent.conf, and where Covalent puts an executor's stdout, stderr and errors
for FAILED (``TaskRuntimeError``) and CANCELLED (``TaskCancelledError``) nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import covalent as ct
import psutil
import pytest

import byoc_executor.local.covalent_server as cs
from byoc_executor.local.covalent_server import CovalentServer

pytestmark = pytest.mark.covalent

PROBE_PLUGIN = '''
import asyncio, json
from pathlib import Path
from covalent._shared_files import TaskCancelledError, TaskRuntimeError
from covalent.executor.base import AsyncBaseExecutor

EXECUTOR_PLUGIN_NAME = "ProbeExecutor"
_EXECUTOR_PLUGIN_DEFAULTS = {"greeting": "", "marker_dir": ""}


class ProbeExecutor(AsyncBaseExecutor):
    def __init__(self, greeting="", marker_dir="", **kwargs):
        super().__init__(**kwargs)
        self.greeting = greeting
        self.marker_dir = marker_dir

    async def run(self, function, args, kwargs, task_metadata):
        mode = args[0].get_deserialized()
        print(f"{self.greeting} mode={mode}", file=self.task_stdout)
        if mode == "fail":
            print("probe stderr line", file=self.task_stderr)
            raise TaskRuntimeError("probe failure message")
        if mode == "cancel":
            await self.set_job_handle({"job": "probe-job"})
            Path(self.marker_dir, f"running-{task_metadata['node_id']}").touch()
            while not await self.get_cancel_requested():
                await asyncio.sleep(0.05)
            print("probe saw the cancel request", file=self.task_stderr)
            raise TaskCancelledError("probe cancelled")
        return function(*args, **kwargs)

    async def cancel(self, task_metadata, job_handle):
        marker = Path(self.marker_dir, f"cancel-{task_metadata['node_id']}")
        marker.write_text(json.dumps(job_handle))
        return True
'''


@ct.electron(executor="local")
def add(a, b):
    return a + b


@ct.electron(executor="local")
def mul(a, b):
    return a * b


@ct.lattice(executor="local", workflow_executor="local")
def arithmetic(x):
    return mul(add(x, 1), add(x, 2))


@ct.electron(executor="local")
def boom(x):
    print("boom says hi")
    raise ValueError(f"boom {x}")


@ct.lattice(executor="local", workflow_executor="local")
def failing(x):
    return boom(x)


@ct.electron(executor="probe")
def probe(mode):
    return f"probe ran {mode}"


@ct.lattice(executor="local", workflow_executor="local")
def probing(mode):
    return probe(mode)


def node(result, name):
    """(node id, getter) of the one node called ``name``."""
    tg = result.lattice.transport_graph
    (nid,) = [n for n in tg._graph.nodes if tg.get_node_value(n, "name") == name]
    return nid, lambda key: tg.get_node_value(nid, key)


def _with_probe(home: Path) -> dict[str, dict]:
    for sub in ("markers", "executor_plugins"):
        (home / sub).mkdir(exist_ok=True)
    (home / "executor_plugins" / "probe.py").write_text(PROBE_PLUGIN)
    return {"probe": {"greeting": "hello-from-conf", "marker_dir": str(home / "markers")}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("covalent-home")
    srv = CovalentServer(home, executors=_with_probe(home))
    t0 = time.monotonic()
    with srv:
        print(f"\ncovalent server start: {time.monotonic() - t0:.2f}s")
        yield srv


def test_layout_stays_under_home(server):
    conf = (server.home / "config" / "covalent.conf").read_text()
    assert f'port = {server.port}' in conf
    assert "[executors.probe]" in conf
    env = server.server_env()
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    for name in ("COVALENT_CONFIG_DIR", "COVALENT_DATABASE", "COVALENT_DATA_DIR",
                 "COVALENT_CACHE_DIR", "COVALENT_LOGDIR", "COVALENT_EXECUTOR_DIR"):
        assert env[name].startswith(str(server.home)), name
    assert (server.home / "db" / "dispatcher_db.sqlite").exists()
    assert server.address == f"127.0.0.1:{server.port}"


def test_three_electrons_on_local(server):
    t0 = time.monotonic()
    result = server.result(server.dispatch(arithmetic, 3), timeout=60)
    print(f"\n3-electron dispatch: {time.monotonic() - t0:.2f}s")
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == (3 + 1) * (3 + 2)


def test_raising_electron_fails_with_traceback_in_stderr(server):
    result = server.result(server.dispatch(failing, 7), timeout=60)
    assert str(result.status) == "FAILED"
    assert "boom" in result.error  # the dispatch's error names the failed node only
    _, get = node(result, "boom")
    assert str(get("status")) == "FAILED"
    assert get("stdout") == "boom says hi\n"
    assert "ValueError: boom 7" in get("stderr")  # LocalExecutor puts the traceback here
    assert not get("error")


def test_executor_section_comes_from_server_conf(server):
    result = server.result(server.dispatch(probing, "ok"), timeout=60)
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == "probe ran ok"
    _, get = node(result, "probe")
    assert get("stdout") == "hello-from-conf mode=ok\n"


def test_task_runtime_error_keeps_streams_and_drops_message(server):
    result = server.result(server.dispatch(probing, "fail"), timeout=60)
    _, get = node(result, "probe")
    assert str(get("status")) == "FAILED"
    assert get("stdout") == "hello-from-conf mode=fail\n"
    assert get("stderr") == "probe stderr line\n"
    # Covalent discards the TaskRuntimeError's own message: the executor must print it to stderr.
    assert not get("error")
    assert "probe failure message" not in (get("stderr") or "")


def test_cancel_reaches_executor(server):
    markers = server.home / "markers"
    dispatch_id = server.dispatch(probing, "cancel")
    deadline = time.monotonic() + 30
    while not list(markers.glob("running-*")):
        assert time.monotonic() < deadline, "probe never started"
        time.sleep(0.05)
    node_id = int(next(markers.glob("running-*")).name.split("-")[1])
    assert "cancel" in server.cancel(dispatch_id, task_ids=[node_id]).lower()
    result = server.result(dispatch_id, timeout=60)
    assert str(result.status) == "CANCELLED"
    _, get = node(result, "probe")
    assert str(get("status")) == "CANCELLED"
    assert get("stdout") == "hello-from-conf mode=cancel\n"
    assert get("stderr") == "probe saw the cancel request\n"
    assert not get("error")
    # cancel() ran on a fresh instance built from the server's conf, with the stored job handle.
    assert json.loads((markers / f"cancel-{node_id}").read_text()) == {"job": "probe-job"}


def test_stop_cancels_running_tasks_and_leaves_no_process(tmp_path):
    srv = CovalentServer(tmp_path, executors=_with_probe(tmp_path))
    srv.start()
    # Fork LocalExecutor's pool workers, the children that survive a plain SIGTERM.
    assert srv.result(srv.dispatch(arithmetic, 1), timeout=60).result == 6
    srv.dispatch(probing, "cancel")
    deadline = time.monotonic() + 30
    while not list((tmp_path / "markers").glob("running-*")):
        assert time.monotonic() < deadline, "probe never started"
        time.sleep(0.05)
    pgid = srv.proc.pid
    members = cs._group_members(pgid)
    assert len(members) > 1, members
    t0 = time.monotonic()
    srv.stop()
    print(f"\ncovalent server stop: {time.monotonic() - t0:.2f}s")
    assert cs._group_members(pgid) == []
    for pid in members:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not cs._answers(srv.url)
    # uvicorn's shutdown cancelled the running dispatch, which reached the executor's cancel().
    assert list((tmp_path / "markers").glob("cancel-*"))
    srv.stop()  # idempotent


def test_early_exit_reports_log_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(cs, "_BOOTSTRAP", "import sys; print('bootstrap broke'); sys.exit(3)")
    srv = CovalentServer(tmp_path)
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3.*bootstrap broke"):
        srv.start()
    assert srv.proc is None


def test_start_timeout_kills_group(tmp_path, monkeypatch):
    monkeypatch.setattr(
        cs, "_BOOTSTRAP", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    )
    srv = CovalentServer(tmp_path, start_timeout=1.0)
    before = {p.pid for p in psutil.process_iter()}
    with pytest.raises(TimeoutError, match="not up"):
        srv.start()
    assert srv.proc is None
    new_sleeps = [
        p for p in psutil.process_iter(["pid", "cmdline", "status"])
        if p.info["pid"] not in before and p.info["cmdline"] == ["sleep", "60"]
        and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert new_sleeps == []


def test_port_in_use_is_refused(server, tmp_path):
    with pytest.raises(RuntimeError, match="already in use"):
        CovalentServer(tmp_path, port=server.port).start()


def test_ensure_uses_running_server(server, tmp_path, monkeypatch):
    from covalent._shared_files import config

    cm = config._config_manager
    monkeypatch.setitem(cm.config_data["dispatcher"], "address", "127.0.0.1")
    monkeypatch.setitem(cm.config_data["dispatcher"], "port", server.port)
    address, started = cs.ensure_covalent_server(tmp_path)
    assert (address, started) == (server.address, None)


def test_ensure_starts_one_when_none_answers(tmp_path, monkeypatch):
    from covalent._shared_files import config

    cm = config._config_manager
    monkeypatch.setitem(cm.config_data["dispatcher"], "address", "127.0.0.1")
    monkeypatch.setitem(cm.config_data["dispatcher"], "port", cs.free_port())
    address, started = cs.ensure_covalent_server(tmp_path)
    try:
        assert started is not None and address == started.address
        assert started.home == tmp_path.resolve()
        assert cs._answers(started.url)
    finally:
        if started is not None:
            started.stop()


def test_isolated_client_touches_nothing_in_home(tmp_path):
    """In a fresh interpreter whose HOME is a temp dir: nothing is written under that HOME."""
    fake_home = tmp_path / "fake-home"
    fake_home.mkdir()
    module = Path(cs.__file__)
    # Loaded by path: byoc_executor/__init__.py imports covalent, which would defeat the point.
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("covalent_server", {str(module)!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        mod.isolate_client_config({str(tmp_path / "iso")!r})
        import covalent
        from covalent._shared_files.config import get_config
        from covalent._shared_files.defaults import get_default_executor
        print(json.dumps({{"executor": get_default_executor(),
                          "conf": get_config("sdk.config_file"),
                          "port": get_config("dispatcher.port")}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVALENT_")}
    env["HOME"] = str(fake_home)
    env.pop("XDG_CACHE_HOME", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["executor"] == "local"
    assert facts["conf"].startswith(str(tmp_path / "iso" / "client"))
    assert facts["port"] == 0
    assert sorted(p.name for p in fake_home.rglob("*")) == []
