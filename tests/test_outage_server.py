"""A 90 s status outage, through a real Covalent server: the jobs are never stopped, the values arrive.

Every GetJob and DescribeTrainingJob is throttled for 90 s while the jobs run: far past botocore's
retry budget (the client's standard-mode retries give up within seconds), so each status call fails
for good, over and over. The error policy (``byoc_executor/policy.py``) calls throttling transient:
the follower must wait it out for as long as the job may live, say so in a ``[byoc]`` line, and never
cancel the job. The window is the emulator's (``FaultRule(duration=...)``), installed over its admin
endpoint as any client of ``byoc-executor local`` would.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import cloudpickle
import covalent as ct
import pytest

from byoc_executor import BYOCExecutor
from byoc_executor.local.covalent_server import CovalentServer
from byoc_executor.services import job_name
from tests.conftest import IMAGE, ROLE
from tests.rescue_support import RUNNING, status_of, wait_for

pytestmark = [pytest.mark.covalent, pytest.mark.slow]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

OUTAGE = 90.0
STATUS_OPS = {"braket": "GetJob", "sagemaker": "DescribeTrainingJob"}
STOP_OPS = {"braket": "CancelJob", "sagemaker": "StopTrainingJob"}


def nap_then(seconds: float, value):
    import time as t

    t.sleep(seconds)
    return value


def admin(emulator, method: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{emulator.url}/_byoc/faults", data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"{}")


def test_a_90_s_status_outage_neither_stops_the_jobs_nor_fails_the_nodes(emulator, bucket, tmp_path: Path) -> None:
    executors = {
        service: BYOCExecutor(service=service, image_uri=IMAGE, s3_bucket_name=bucket, role_arn=ROLE, endpoint_url=emulator.url,
                              device="local:braket/braket_sv", poll_freq=2)
        for service in STATUS_OPS
    }

    @ct.electron(executor=executors["braket"])
    def on_braket():
        return nap_then(OUTAGE + 15, 14)

    @ct.electron(executor=executors["sagemaker"])
    def on_sagemaker():
        return nap_then(OUTAGE + 15, 21)

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return [on_braket(), on_sagemaker()]  # nodes 0 and 1; the list is a helper node

    server = CovalentServer(tmp_path / "server")
    try:
        server.start()
        dispatch_id = server.dispatch(workflow)
        names = {service: job_name(dispatch_id, node) for node, service in enumerate(STATUS_OPS)}
        for name in names.values():
            wait_for(emulator, name, RUNNING, 120)
        time.sleep(2.0)  # the followers have seen the jobs run
        rules = {service: {"rate": 1.0, "kinds": {"throttle": 1.0}, "operations": [op], "duration": OUTAGE}
                 for service, op in STATUS_OPS.items()}
        admin(emulator, "POST", {"rules": rules})
        # The jobs run on through the outage: nobody stops them.
        time.sleep(OUTAGE / 2)
        assert {status_of(emulator, name) for name in names.values()} <= RUNNING
        result = server.result(dispatch_id, timeout=OUTAGE + 240)
        report = admin(emulator, "GET")["plan"]
        assert str(result.status) == "COMPLETED", server.log_tail()
        assert result.result == [14, 21]
        for service, op in STATUS_OPS.items():
            assert report["injected"][service][op]["throttle"] > 0, report  # the outage did happen
            assert STOP_OPS[service] not in report["seen"].get(service, {}), report  # and no job was stopped
        for node in (0, 1):
            stderr = result.get_node_result(node)["stderr"] or ""
            assert "status calls failing for" in stderr and "the job is not affected" in stderr, stderr
    finally:
        admin(emulator, "DELETE")
        server.stop()
