"""One AWS job per electron: Covalent's helper nodes never start a job, and a packed task group runs in one.

Through a real Covalent server (the session's, see conftest.py) on both services. Jobs are counted
through the emulator's own list APIs (SearchJobs, ListTrainingJobs), never through the executor.
Task packing is Covalent's client-side setting (``sdk.task_packing``), read when the lattice is
built: each test sets it for its own dispatches.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

import boto3
import cloudpickle
import covalent as ct
import pytest

from byoc_executor import BYOCExecutor
from tests.conftest import BUCKET, IMAGE, ROLE
from tests.test_workflows import describe_failure, nodes

pytestmark = pytest.mark.covalent

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SERVICES = ["braket", "sagemaker"]


class Pair:
    """A value with attributes (the types of values a helper reads must be importable in the server)."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high


def the_executor(emulator, service: str) -> BYOCExecutor:
    common = dict(image_uri=IMAGE, s3_bucket_name=BUCKET, role_arn=ROLE, endpoint_url=emulator.url, poll_freq=1)
    if service == "braket":
        return BYOCExecutor(service="braket", device="local:braket/braket_sv", **common)
    return BYOCExecutor(service="sagemaker", **common)


def client(emulator, service: str):
    return boto3.client(service, endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def jobs_of(emulator, service: str, dispatch_id: str) -> dict[str, str]:
    """Job name -> status of every job of the dispatch, through the service's list API (paginated)."""
    prefix = f"cov-{dispatch_id[:8]}"
    found: dict[str, str] = {}
    if service == "braket":
        pages = client(emulator, "braket").get_paginator("search_jobs").paginate(
            filters=[{"name": "createdAt", "operator": "GT", "values": ["2000-01-01T00:00:00Z"]}]
        )
        for page in pages:
            found.update({j["jobName"]: j["status"] for j in page["jobs"] if j["jobName"].startswith(prefix)})
    else:
        for page in client(emulator, "sagemaker").get_paginator("list_training_jobs").paginate(NameContains=prefix):
            found.update({j["TrainingJobName"]: j["TrainingJobStatus"] for j in page["TrainingJobSummaries"]})
    return found


@contextmanager
def task_packing(on: bool):
    before = ct.get_config("sdk.task_packing")
    ct.set_config("sdk.task_packing", "true" if on else "false")
    try:
        yield
    finally:
        ct.set_config("sdk.task_packing", before)


def task_groups(result) -> dict[int, list[str]]:
    """Task group id -> the names of its nodes, as Covalent built the graph (packing or not)."""
    graph = result.lattice.transport_graph
    groups: dict[int, list[str]] = {}
    for node_id in sorted(graph._graph.nodes):
        groups.setdefault(graph.get_node_value(node_id, "task_group_id"), []).append(graph.get_node_value(node_id, "name"))
    return groups


def run(covalent_server, workflow, *args, timeout: float = 240):
    dispatch_id = covalent_server.dispatch(workflow, *args)
    return dispatch_id, covalent_server.result(dispatch_id, timeout=timeout)


# --- helper nodes: never a job ----------------------------------------------------------------------------------


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("service", SERVICES)
def test_unpacking_and_a_list_cost_one_job_per_electron(covalent_server, emulator, service: str, packing: bool) -> None:
    ex = the_executor(emulator, service)

    @ct.electron(executor=ex)
    def pair(x):
        return x, x + 1

    @ct.electron(executor=ex)
    def total(values):
        return sum(values)

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow(x):
        a, b = pair(x)  # two __iter__ helper nodes
        return total([a, b])  # a list-collecting helper node

    with task_packing(packing):
        dispatch_id, result = run(covalent_server, workflow, 20)
    assert str(result.status) == "COMPLETED", describe_failure(result)
    assert result.result == 41
    done = "COMPLETED" if service == "braket" else "Completed"
    assert sorted(jobs_of(emulator, service, dispatch_id).values()) == [done, done]  # pair and total: 2 jobs, not 5


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("service", SERVICES)
def test_attribute_access_indexing_and_a_dict_of_electrons(covalent_server, emulator, service: str, packing: bool) -> None:
    ex = the_executor(emulator, service)

    @ct.electron(executor=ex)
    def make(x):
        return Pair(x, 10 * x)

    @ct.electron(executor=ex)
    def both(x):
        return [x, -x]

    @ct.electron(executor=ex)
    def report(values):
        return {k: values[k] for k in sorted(values)}

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow(x):
        p = make(x)
        q = both(x)
        return report({"low": p.low, "high": p.high, "first": q[0], "second": q[1]})

    with task_packing(packing):
        dispatch_id, result = run(covalent_server, workflow, 3)
    assert str(result.status) == "COMPLETED", describe_failure(result)
    assert result.result == {"first": 3, "high": 30, "low": 3, "second": -3}
    groups = task_groups(result)
    electrons = {"make", "both", "report"}
    with_a_job = [group for group, names in groups.items() if electrons & set(names)]
    assert len(with_a_job) == 3, groups  # each electron in its own group
    packed_helpers = [name for group in with_a_job for name in groups[group] if name not in electrons]
    # Packed, Covalent puts every helper (.low, .high, [0], [1], the dict and its two lists) in its electron's
    # group; unpacked, each helper is a group of its own. Parameters are never packed.
    assert len(packed_helpers) == (7 if packing else 0), groups
    done = "COMPLETED" if service == "braket" else "Completed"
    # One job per group with an electron in it (make, both, report); helpers alone ran in the server.
    assert sorted(jobs_of(emulator, service, dispatch_id).values()) == [done] * len(with_a_job)


@pytest.mark.parametrize("service", SERVICES)
def test_a_user_function_with_a_helper_like_name_still_runs_as_a_job(covalent_server, emulator, service: str) -> None:
    ex = the_executor(emulator, service)

    def _auto_list_node(*args):  # the very name of Covalent's list helper, but the user's code
        import os

        return [os.environ.get("AMZN_BRAKET_JOB_NAME") or os.environ.get("SAGEMAKER_BASE_DIR") or "in a job", *args]

    sneaky = ct.electron(_auto_list_node, executor=ex)

    def odd(x):
        return x * 2

    odd.__name__ = ":odd.__getitem__"  # a name only Covalent's helpers have
    odder = ct.electron(odd, executor=ex)

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow(x):
        return sneaky(odder(x))

    dispatch_id, result = run(covalent_server, workflow, 4)
    assert str(result.status) == "COMPLETED", describe_failure(result)
    assert result.result[1] == 8 and result.result[0] != "in a job"  # it saw a job's environment
    assert len(jobs_of(emulator, service, dispatch_id)) == 2


# --- task packing: one job per group -------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_packed_group_whose_electron_raises_fails_it_and_runs_nothing_after(covalent_server, emulator, service: str) -> None:
    ex = the_executor(emulator, service)

    @ct.electron(executor=ex)
    def explode(x):
        print("about to fail", x)
        raise ValueError(f"bad pair {x}")

    @ct.electron(executor=ex)
    def total(values):
        return sum(values)

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow(x):
        a, b = explode(x)  # explode and its two helpers are one group
        return total([a, b])

    with task_packing(True):
        dispatch_id, result = run(covalent_server, workflow, 7)
    assert str(result.status) == "FAILED"
    by_name = nodes(result)
    assert str(by_name["explode"]["status"]) == "FAILED"
    assert "ValueError" in by_name["explode"]["stderr"] and "bad pair 7" in by_name["explode"]["stderr"], describe_failure(result)
    assert "about to fail 7" in by_name["explode"]["stdout"]
    for name, node in by_name.items():
        if name.startswith(":explode()"):
            assert str(node["status"]) != "COMPLETED", name  # the group's later nodes did not run
    assert str(by_name["total"]["status"]) not in ("COMPLETED", "RUNNING")
    assert len(jobs_of(emulator, service, dispatch_id)) == 1  # total never started


@pytest.mark.parametrize("service", SERVICES)
def test_cancel_of_a_running_packed_group_cancels_its_job(covalent_server, emulator, service: str) -> None:
    ex = the_executor(emulator, service)

    @ct.electron(executor=ex)
    def slow_pair(x):
        import time as t

        t.sleep(120)
        return x, x

    @ct.electron(executor=ex)
    def total(values):
        return sum(values)

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow(x):
        a, b = slow_pair(x)
        return total([a, b])

    with task_packing(True):
        dispatch_id = covalent_server.dispatch(workflow, 1)
    running = "RUNNING" if service == "braket" else "InProgress"
    deadline = time.monotonic() + 90
    while list(jobs_of(emulator, service, dispatch_id).values()) != [running]:
        assert time.monotonic() < deadline, jobs_of(emulator, service, dispatch_id)
        time.sleep(0.5)
    covalent_server.cancel(dispatch_id)
    result = covalent_server.result(dispatch_id, timeout=120)
    assert str(result.status) == "CANCELLED", describe_failure(result)
    assert str(nodes(result)["slow_pair"]["status"]) == "CANCELLED"
    stopped = "CANCELLED" if service == "braket" else "Stopped"
    deadline = time.monotonic() + 60
    while list(jobs_of(emulator, service, dispatch_id).values()) != [stopped]:
        assert time.monotonic() < deadline, jobs_of(emulator, service, dispatch_id)
        time.sleep(0.5)
