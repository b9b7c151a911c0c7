"""The Covalent server stops or dies while BYOC jobs run: nothing is lost, orphaned or left billing.

Each test starts its own real Covalent server (it stops or kills it) against the session's
emulator, and stops every server it started by its pid. ``covalent stop`` is what
``covalent_dispatcher/_cli/service.py`` does: SIGINT to the uvicorn process, SIGKILL to its
children, then a wait; SIGTERM is ``kill``, systemd's and docker's stop. A restarted server
reads the same files on the same port (a port in TIME_WAIT is free for a listening socket with
SO_REUSEADDR, which uvicorn sets: see ``reusable_port``).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import time
from pathlib import Path

import cloudpickle
import covalent as ct
import psutil
import pytest

from byoc_executor import BYOCExecutor
from byoc_executor.local import covalent_server
from byoc_executor.local.covalent_server import CovalentServer
from byoc_executor.services import job_name
from tests.conftest import IMAGE, ROLE
from tests.rescue_support import CANCELLED, ENDED, RUNNING, cli, jobs_json, status_of, wait_for

pytestmark = pytest.mark.covalent
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CANCEL_BOUND = 30.0  # seconds from the signal to the job CANCELLED/Stopped (measured: 0.4-0.6 s; a bound for a loaded machine)


class QuantumError(Exception):
    pass


def byoc(emulator, bucket: str, service: str, **over) -> BYOCExecutor:
    return BYOCExecutor(service=service, image_uri=IMAGE, s3_bucket_name=bucket, role_arn=ROLE, endpoint_url=emulator.url,
                        device="local:braket/braket_sv", poll_freq=1, **over)


@pytest.fixture
def reusable_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """CovalentServer checks its port with a plain bind, which a connection in TIME_WAIT fails for
    60 s after the old server closed it; uvicorn binds with SO_REUSEADDR and is not held up."""

    def free(port: int) -> bool:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((covalent_server.HOST, port))
            except OSError:
                return False
            return True

    monkeypatch.setattr(covalent_server, "_port_is_free", free)


def stop_like_covalent_stop(server: CovalentServer, sig: signal.Signals) -> float:
    """Send ``sig`` to the server (for SIGINT, SIGKILL its children, as ``covalent stop`` does), wait for it
    to exit; returns the seconds it took."""
    proc = server.proc
    assert proc is not None
    children = psutil.Process(proc.pid).children(recursive=True)
    start = time.monotonic()
    os.kill(proc.pid, sig)
    if sig == signal.SIGINT:
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    proc.wait(timeout=60)
    return time.monotonic() - start


def recorded_node(server: CovalentServer, dispatch_id: str, node_id: int = 0) -> dict:
    return ct.get_result(dispatch_id, dispatcher_addr=server.url, wait=False).get_node_result(node_id)


def sleep_then(seconds: float, value):
    import time as t

    t.sleep(seconds)
    return value


def sleep_then_raise(seconds: float, message: str):
    import time as t

    t.sleep(seconds)
    raise QuantumError(message)


@pytest.mark.parametrize("sig,service", [
    pytest.param(signal.SIGINT, "braket", id="covalent-stop-braket"),
    pytest.param(signal.SIGINT, "sagemaker", id="covalent-stop-sagemaker"),
    pytest.param(signal.SIGTERM, "sagemaker", id="sigterm-sagemaker"),
])
def test_server_stop_cancels_the_job_and_the_node_ends_cancelled(emulator, bucket, tmp_path: Path, reusable_port, sig, service) -> None:
    ex = byoc(emulator, bucket, service)

    @ct.electron(executor=ex)
    def slow():
        return sleep_then(300, "never")

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return slow()

    server = CovalentServer(tmp_path / "server")
    try:
        server.start()
        dispatch_id = server.dispatch(workflow)
        name = job_name(dispatch_id, 0)
        wait_for(emulator, name, RUNNING, 90)
        signalled = time.monotonic()
        exited = stop_like_covalent_stop(server, sig)
        wait_for(emulator, name, CANCELLED, CANCEL_BOUND - (time.monotonic() - signalled))
        print(f"{sig.name} {service}: server exited after {exited:.2f} s, job {status_of(emulator, name)} "
              f"{time.monotonic() - signalled:.2f} s after the signal")
        log = server.log_path.read_text(errors="replace")
        assert f"job {name}" in log or name in log
        assert "was cancelled (on_server_exit = cancel)" in log, server.log_tail()
        server.stop()
        with CovalentServer(tmp_path / "server", port=server.port) as again:
            node = recorded_node(again, dispatch_id)
            assert str(node["status"]) == "CANCELLED", node
            assert "was cancelled" in (node.get("stderr") or ""), node
    finally:
        server.stop()


def test_keep_lets_the_job_run_on_and_result_collects_its_value(emulator, bucket, tmp_path: Path) -> None:
    ex = byoc(emulator, bucket, "braket", on_server_exit="keep")

    @ct.electron(executor=ex)
    def worth_keeping():
        return sleep_then(8, {"kept": True, "value": 42})

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return worth_keeping()

    server = CovalentServer(tmp_path / "server")
    try:
        server.start()
        dispatch_id = server.dispatch(workflow)
        name = job_name(dispatch_id, 0)
        wait_for(emulator, name, RUNNING, 90)
        stop_like_covalent_stop(server, signal.SIGINT)
        assert status_of(emulator, name) in RUNNING  # no one cancelled it
        assert "keeps running (on_server_exit = keep)" in server.log_path.read_text(errors="replace"), server.log_tail()
        assert wait_for(emulator, name, ENDED, 60) == "COMPLETED"
        (job,) = jobs_json(emulator, "--dispatch", dispatch_id)
        done = cli(emulator, "result", job["job_id"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "{'kept': True, 'value': 42}"
    finally:
        server.stop()


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_after_a_crash_jobs_are_found_collected_and_logged_by_the_next_server(emulator, bucket, tmp_path: Path, reusable_port, service) -> None:
    ex = byoc(emulator, bucket, service)

    @ct.electron(executor=ex)
    def value_node():
        return sleep_then(5, {"n": 7})

    @ct.electron(executor=ex)
    def raising_node():
        return sleep_then_raise(5, "decoherence after the crash")

    @ct.electron(executor=ex)
    def long_node():
        return sleep_then(300, "never")

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        value_node()
        raising_node()
        return long_node()

    server = CovalentServer(tmp_path / "server")
    try:
        server.start()
        dispatch_id = server.dispatch(workflow)
        value_name, raising_name, long_name = (job_name(dispatch_id, n) for n in range(3))
        for name in (value_name, raising_name, long_name):
            wait_for(emulator, name, RUNNING, 90)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # the server crashes: nobody follows the jobs now
        server.stop()
        # The jobs go on without a server.
        assert wait_for(emulator, value_name, ENDED, 60) in ("COMPLETED", "Completed")
        assert wait_for(emulator, raising_name, ENDED, 60) in ("FAILED", "Failed")

        listed = {j["node"]: j for j in jobs_json(emulator, "--dispatch", dispatch_id)}
        assert sorted(listed) == ["0", "1", "2"]
        assert listed["0"]["state"] == "COMPLETED" and listed["0"]["billable_seconds"] >= 4
        assert listed["1"]["state"] == "FAILED" and listed["1"]["billable_seconds"] is not None
        assert listed["2"]["state"] == "RUNNING" and listed["2"]["billable_seconds"] is None
        assert {j["job_name"] for j in listed.values()} == {value_name, raising_name, long_name}
        assert [j["node"] for j in jobs_json(emulator, "--dispatch", dispatch_id, "--running")] == ["2"]
        table = cli(emulator, "jobs", "--dispatch", dispatch_id)
        assert table.returncode == 0 and "BILLABLE" in table.stdout and long_name in table.stdout, table.stderr

        done = cli(emulator, "result", listed["0"]["job_id"])
        assert done.returncode == 0 and done.stdout.strip() == "{'n': 7}", done.stderr
        out = tmp_path / "value.pickle"
        assert cli(emulator, "result", listed["0"]["job_id"], "--out", str(out)).returncode == 0
        assert pickle.loads(out.read_bytes()) == {"n": 7}
        done = cli(emulator, "result", listed["1"]["job_id"])
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "QuantumError" in done.stderr and "decoherence after the crash" in done.stderr and "Traceback" in done.stderr

        # A new server on the same port logs the old server's job that still runs with no follower,
        # at its first BYOC electron.
        @ct.electron(executor=ex)
        def anything():
            return 1

        @ct.lattice(executor="local", workflow_executor="local")
        def trigger():
            return anything()

        seen_before = server.log_path.stat().st_size
        with CovalentServer(tmp_path / "server", port=server.port) as again:
            trigger_id = again.dispatch(trigger)
            assert str(again.result(trigger_id, timeout=120).status) == "COMPLETED"
            deadline = time.monotonic() + 30
            while long_name not in (log := again.log_path.read_text(errors="replace")[seen_before:]):
                assert time.monotonic() < deadline, again.log_tail()
                time.sleep(0.2)
            line = next(line for line in log.splitlines() if long_name in line)
            assert "earlier process of this Covalent server" in line and "byoc-executor cancel" in line, line
            assert value_name not in log and raising_name not in log  # ended jobs are not orphans

        done = cli(emulator, "cancel", listed["2"]["job_id"])
        assert done.returncode == 0, done.stderr
        wait_for(emulator, long_name, CANCELLED, 30)
    finally:
        server.stop()
