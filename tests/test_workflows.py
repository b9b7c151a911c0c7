"""Workflows through a real Covalent server (started by the test session, with its own dirs), on both services."""

from __future__ import annotations

import sys
import time

import boto3
import cloudpickle
import covalent as ct
import pytest

from byoc_executor import BYOCExecutor
from byoc_executor.services import job_name

pytestmark = pytest.mark.covalent

# The tasks below live in this test module, which jobs cannot import: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:test"
ROLE = "arn:aws:iam::123456789012:role/byoc-jobs"


def executors(emulator, bucket):
    common = dict(image_uri=IMAGE, s3_bucket_name=bucket, role_arn=ROLE, endpoint_url=emulator.url, poll_freq=1)
    return (
        BYOCExecutor(service="braket", device="local:braket/braket_sv", **common),
        BYOCExecutor(service="sagemaker", instance_type="ml.g5.xlarge", **common),
    )


def client(emulator, service: str):
    return boto3.client(service, endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def job_status(emulator, service: str, name: str) -> list[str]:
    """The statuses of every emulator job with exactly this name (a list, to count duplicates)."""
    if service == "braket":
        # Job ARNs end in a UUID, and SearchJobs filters only by jobArn and createdAt: match names here.
        pages = client(emulator, "braket").get_paginator("search_jobs").paginate(filters=[])
        return [j["status"] for page in pages for j in page["jobs"] if j["jobName"] == name]
    jobs = client(emulator, "sagemaker").list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    return [j["TrainingJobStatus"] for j in jobs if j["TrainingJobName"] == name]


def describe_failure(result) -> str:
    """Every node's status, stderr and error: what a failed assertion should show."""
    lines = [str(result.error)]
    for name, node in nodes(result).items():
        lines.append(f"-- {name}: {node['status']}\n{node.get('stderr') or ''}{node.get('error') or ''}")
    return "\n".join(lines)


def nodes(result) -> dict[str, dict]:
    """Node results by node name (electron names are unique in these workflows)."""
    out = {}
    for node_id in result.lattice.transport_graph._graph.nodes:
        node = result.get_node_result(node_id)
        out[node["node_name"]] = node
    return out


def test_workflow_on_both_services(covalent_server, emulator, bucket) -> None:
    braket, sagemaker = executors(emulator, bucket)

    @ct.electron(executor=sagemaker)
    def add(a, b):
        print(f"sagemaker adds {a}+{b}")
        return a + b

    @ct.electron(executor=braket)
    def square(x):
        print(f"braket squares {x}")
        return x * x

    @ct.electron(executor=braket)
    def negate(x):
        return -x

    @ct.electron(executor=sagemaker)
    def pair(a, b):
        return [a, b]

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow(a, b):
        s = add(a, b)
        return pair(square(s), negate(s))

    dispatch_id = covalent_server.dispatch(workflow, 2, 3)
    result = covalent_server.result(dispatch_id, timeout=240)
    assert str(result.status) == "COMPLETED", describe_failure(result)
    assert result.result == [25, -5]

    by_name = nodes(result)
    assert "sagemaker adds 2+3" in by_name["add"]["stdout"]
    assert "braket squares 5" in by_name["square"]["stdout"]
    # Exactly one job per electron, on the service its executor names, and it completed.
    for name, service in (("add", "sagemaker"), ("square", "braket"), ("negate", "braket"), ("pair", "sagemaker")):
        node_id = by_name[name]["node_id"]
        assert job_status(emulator, service, job_name(dispatch_id, node_id)) == [
            "COMPLETED" if service == "braket" else "Completed"
        ], name


def test_executor_configured_only_in_covalent_conf(covalent_server, emulator) -> None:
    """``executor="byoc"``: the server builds the executor from its [executors.byoc] section (sagemaker there)."""

    @ct.electron(executor="byoc")
    def where():
        import os

        return os.environ.get("BYOC_FROM_CONF")

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return where()

    dispatch_id = covalent_server.dispatch(workflow)
    result = covalent_server.result(dispatch_id, timeout=180)
    assert str(result.status) == "COMPLETED", describe_failure(result)
    assert result.result == "set-in-covalent-conf"
    node_id = nodes(result)["where"]["node_id"]
    assert job_status(emulator, "sagemaker", job_name(dispatch_id, node_id)) == ["Completed"]


class QuantumError(Exception):
    pass


def test_raising_electron_fails_the_node_with_its_exception(covalent_server, emulator, bucket) -> None:
    braket, _ = executors(emulator, bucket)

    @ct.electron(executor=braket)
    def fail(x):
        raise QuantumError(f"decoherence at step {x}")

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return fail(7)

    dispatch_id = covalent_server.dispatch(workflow)
    result = covalent_server.result(dispatch_id, timeout=180)
    assert str(result.status) == "FAILED"
    node = nodes(result)["fail"]
    assert str(node["status"]) == "FAILED"
    text = (node.get("stderr") or "") + (node.get("error") or "")
    assert "QuantumError" in text and "decoherence at step 7" in text
    assert "Traceback" in text


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_cancel_mid_run(covalent_server, emulator, bucket, service: str) -> None:
    braket, sagemaker = executors(emulator, bucket)

    @ct.electron(executor=braket if service == "braket" else sagemaker)
    def slow():
        import time as t

        t.sleep(120)
        return "should not finish"

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return slow()

    dispatch_id = covalent_server.dispatch(workflow)
    name = job_name(dispatch_id, 0)
    deadline = time.monotonic() + 60
    while job_status(emulator, service, name) != (["RUNNING"] if service == "braket" else ["InProgress"]):
        assert time.monotonic() < deadline, "the job never started running"
        time.sleep(0.25)
    covalent_server.cancel(dispatch_id)
    result = covalent_server.result(dispatch_id, timeout=120)
    slow_node = nodes(result)["slow"]
    assert str(result.status) == "CANCELLED", (slow_node.get("error"), slow_node.get("stderr"))
    assert str(slow_node["status"]) == "CANCELLED"
    deadline = time.monotonic() + 30
    while job_status(emulator, service, name) not in (["CANCELLED"], ["Stopped"]):
        assert time.monotonic() < deadline, job_status(emulator, service, name)
        time.sleep(0.25)
