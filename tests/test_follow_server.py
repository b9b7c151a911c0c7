"""Following a job through a bad day, through a real Covalent server (the fast twins, against a fake
dispatcher, are in tests/test_follow.py).

Three scenarios of issue 15, each dispatched to a real Covalent 0.240 server whose executors follow
jobs in the emulator; what happened is read back from the emulator (its request hooks and job list),
the nodes' stderr and the server's log, never from the executor:

* Covalent's cancel question goes unanswered. A real server cannot be made to answer late without
  patching Covalent; what a real server does do is fail to answer. Its executor proxy
  (``covalent_dispatcher/_core/runner_modules/executor_proxy.py``) answers the question from its
  SQLite database with a synchronous query; while another connection holds the database locked
  (``BEGIN EXCLUSIVE``: a backup, a second process, a long transaction), that query waits out
  pysqlite's 5 s busy timeout (on the server's event loop), fails with "database is locked", and
  the proxy stops listening to that task group: every later question goes unanswered and times
  out in the executor. The jobs must run on and the values arrive. (A dispatcher that answers
  late, and late answers taken for the next question's, are covered by the fake dispatcher only.)
* A job deleted behind the executor's back: the emulator has no way to delete a job, so a request
  hook answers the job's GetJob/DescribeTrainingJob as AWS answers for a job that does not exist,
  and the job's process is killed. Not-found is waited out for ``policy.NOT_FOUND_WINDOW``
  (120 s) after the job was submitted; to keep the test short, the server's executors run on a
  clock ``SCALE`` times faster (``BYOC_TIME_SCALE``, ``byoc_executor/clock.py``), so the window
  passes in 120/SCALE wall seconds.
* A job still queued past ``queue_timeout`` (an emulator whose jobs wait 20 s in each phase) is
  cancelled, and the node fails naming the setting.
"""

from __future__ import annotations

import sqlite3
import sys
import time

import cloudpickle
import covalent as ct
import pytest

from byoc_executor import BYOCExecutor, policy
from byoc_executor.local import Emulator
from byoc_executor.local.covalent_server import CovalentServer
from byoc_executor.services import job_name
from tests.conftest import BUCKET, IMAGE, ROLE
from tests.emulator_helpers import CREATE, DESCRIBE, STOP, Calls, job_of, not_found
from tests.rescue_support import CANCELLED, ENDED, RUNNING, status_of, wait_for

pytestmark = pytest.mark.covalent
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SERVICES = ["braket", "sagemaker"]
SCALE = 6.0  # the scaled server's executors: 6 s of their clock per wall second
LOCK = 14.0  # seconds Covalent's database stays locked: two questions (one per task group) block 5 s each


def nap_then(seconds: float, value):
    import time as t

    t.sleep(seconds)
    return value


def byoc(emulator: Emulator, service: str, **over) -> BYOCExecutor:
    settings = dict(service=service, image_uri=IMAGE, s3_bucket_name=BUCKET, role_arn=ROLE, endpoint_url=emulator.url,
                    device="local:braket/braket_sv", poll_freq=1.0)
    settings.update(over)
    return BYOCExecutor(**settings)


def arn_of(emulator: Emulator, name: str) -> str:
    return next(job["arn"] for job in emulator.jobs() if job["name"] == name)


@pytest.fixture(scope="module")
def scaled_server(emulator, tmp_path_factory: pytest.TempPathFactory):
    """A Covalent server of its own (its database is locked by one test) whose executors count
    time SCALE times faster (``BYOC_TIME_SCALE``): their not-found window and outage reports come
    SCALE times sooner; their questions to Covalent are not scaled (clock.py)."""
    with CovalentServer(tmp_path_factory.mktemp("covalent-scaled"), env={"BYOC_TIME_SCALE": str(SCALE)}) as server:
        yield server


# --- the cancel question goes unanswered --------------------------------------------------------------------


def test_a_dispatcher_that_stops_answering_the_cancel_question_neither_cancels_nor_fails_the_jobs(
    emulator: Emulator, scaled_server: CovalentServer
) -> None:
    executors = {service: byoc(emulator, service, poll_freq=SCALE) for service in SERVICES}

    @ct.electron(executor=executors["braket"])
    def on_braket():
        return nap_then(35, 14)

    @ct.electron(executor=executors["sagemaker"])
    def on_sagemaker():
        return nap_then(35, 21)

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return [on_braket(), on_sagemaker()]  # nodes 0 and 1; the list is a helper node

    db = scaled_server.dirs["db"]
    log_before = scaled_server.log_path.stat().st_size
    with Calls(emulator) as calls:
        dispatch_id = scaled_server.dispatch(workflow)
        names = {service: job_name(dispatch_id, node) for node, service in enumerate(SERVICES)}
        for name in names.values():
            wait_for(emulator, name, RUNNING, 120)
        time.sleep(2.0)  # the followers ask the cancel question every second, and are answered
        locker = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            mode = locker.execute("PRAGMA journal_mode").fetchone()[0]
            assert mode != "wal", f"Covalent's database is in {mode} mode: a lock would not keep its readers out"
            locker.execute("BEGIN EXCLUSIVE")
            time.sleep(LOCK)
            assert {status_of(emulator, name) for name in names.values()} <= RUNNING  # nobody stopped them
        finally:
            locker.close()  # ends the transaction: the lock is gone
        result = scaled_server.result(dispatch_id, timeout=120)
    log = scaled_server.log_path.read_text(errors="replace")[log_before:]
    assert str(result.status) == "COMPLETED", scaled_server.log_tail()
    assert result.result == [14, 21]
    # Covalent failed to answer (its own warning), then stopped listening: the questions timed out.
    assert log.count("database is locked") >= len(SERVICES), log[-4000:]
    for service, name in names.items():
        assert calls.of(STOP[service]) == [], service  # nobody asked the service to stop a job
        assert status_of(emulator, name) in ("COMPLETED", "Completed")
    for node in (0, 1):
        stderr = result.get_node_result(node)["stderr"] or ""
        assert "cancel question calls failing for" in stderr and "the job is not affected" in stderr, stderr


# --- a job deleted behind the executor's back -------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_job_deleted_behind_the_executors_back_ends_the_node_with_the_reason(
    emulator: Emulator, scaled_server: CovalentServer, service: str
) -> None:
    ex = byoc(emulator, service, poll_freq=SCALE)

    @ct.electron(executor=ex)
    def doomed():
        return nap_then(300, "never")

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return doomed()

    gone: dict[str, str] = {}
    answered: list[float] = []

    def deleted(call):
        if call.operation == DESCRIBE[service] and gone and job_of(call) in gone.values():
            answered.append(time.monotonic())
            return not_found(service)
        return None

    with Calls(emulator) as calls:
        emulator.request_hooks.append(deleted)
        try:
            dispatch_id = scaled_server.dispatch(workflow)
            name = job_name(dispatch_id, 0)
            wait_for(emulator, name, RUNNING, 120)
            time.sleep(2.0)
            gone.update(name=name, arn=arn_of(emulator, name))  # from now on the job does not exist...
            emulator.kill(name)  # ...nor run
            result = scaled_server.result(dispatch_id, timeout=120)
        finally:
            emulator.request_hooks.remove(deleted)
    node = result.get_node_result(0)
    stderr = node["stderr"] or ""
    assert str(result.status) == "FAILED" and str(node["status"]) == "FAILED", scaled_server.log_tail()
    assert "no longer exists" in stderr and "deleted outside the executor" in stderr, stderr
    # Not-found was waited out for the whole window after the job was submitted, then believed.
    (created,) = calls.of(CREATE[service], name)
    window = policy.NOT_FOUND_WINDOW / SCALE
    assert answered and answered[0] - created < window, "the follower never asked about the deleted job within the window"
    assert answered[-1] - created >= window, (answered[-1] - created, window)
    assert calls.of(STOP[service]) == []  # nothing to stop


# --- a job queued past queue_timeout ------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_job_queued_past_queue_timeout_is_cancelled_and_the_node_names_the_setting(
    covalent_server: CovalentServer, slow_queue: Emulator, service: str
) -> None:
    ex = byoc(slow_queue, service, queue_timeout=2)

    @ct.electron(executor=ex)
    def stuck():
        return nap_then(0, "ran")

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return stuck()

    with Calls(slow_queue) as calls:
        dispatch_id = covalent_server.dispatch(workflow)
        result = covalent_server.result(dispatch_id, timeout=90)
    name = job_name(dispatch_id, 0)
    node = result.get_node_result(0)
    stderr = node["stderr"] or ""
    assert str(result.status) == "FAILED" and str(node["status"]) == "FAILED", covalent_server.log_tail()
    assert "queue_timeout = 2 s" in stderr and "it was cancelled" in stderr, stderr
    (created,) = calls.of(CREATE[service], name)
    stops = calls.of(STOP[service], name if service == "sagemaker" else arn_of(slow_queue, name))
    assert stops and 2.0 <= stops[0] - created < 20.0, (stops, created)  # after queue_timeout, well before the queue ended
    assert wait_for(slow_queue, name, ENDED, 60) in CANCELLED
