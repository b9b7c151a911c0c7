"""The executor against the emulator over loopback HTTP, both services: the electron's life without Covalent's server.

``execute()`` is Covalent's own entry into an executor; it is called here with the real wrapper
(``wrapper_fn`` over ``TransportableObject``s), exactly as the dispatcher calls it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.request
import uuid
from functools import partial

import boto3
import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS
from covalent._workflow.transportable_object import TransportableObject
from covalent.executor.utils.wrappers import wrapper_fn

from byoc_executor import BYOCExecutor, aws, pipeline
from byoc_executor.local import Emulator
from tests.covalent_listener import Listener

from tests.conftest import BUCKET, IMAGE, ROLE

# The tasks below live in this test module, which jobs cannot import: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
SERVICES = ["braket", "sagemaker"]


class ElectronError(Exception):
    """A custom exception the task raises; its name must reach the node's error."""


def add_and_print(a: int, b: int) -> int:
    print(f"stdout says {a}+{b}")
    print("stderr says hello", file=sys.stderr)
    return a + b


def raise_custom(message: str) -> None:
    raise ElectronError(message)


def sleep_then_return(seconds: float) -> str:
    print("started sleeping", flush=True)
    time.sleep(seconds)
    return "woke up"


def boto(emulator: Emulator, service: str):
    return boto3.client(service, endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def executor(emulator: Emulator, service: str, **over) -> BYOCExecutor:
    settings = dict(
        service=service,
        image_uri=IMAGE,
        s3_bucket_name=BUCKET,
        role_arn=ROLE,
        endpoint_url=emulator.url,
        device="local:braket/braket_sv",
        poll_freq=0.5,
        max_runtime=120,
    )
    settings.update(over)
    return BYOCExecutor(**settings)


async def execute(ex: BYOCExecutor, fn, *args, meanwhile=None, **kwargs):
    """Run ``fn`` through the executor as Covalent's dispatcher would.

    Args:
        meanwhile: an ``async f(listener)`` run beside the electron (to cancel it, or kill its job).

    Returns:
        (value, stdout, stderr, status, listener)
    """
    listener = Listener(ex)
    dispatch_id, node_id = str(uuid.uuid4()), 3
    function = partial(wrapper_fn, TransportableObject(fn), [], [])
    t_args = [TransportableObject(a) for a in args]
    t_kwargs = {k: TransportableObject(v) for k, v in kwargs.items()}
    side = asyncio.create_task(meanwhile(listener)) if meanwhile else None
    try:
        result, stdout, stderr, status = await ex.execute(function, t_args, t_kwargs, dispatch_id, "/tmp", node_id)
        if side:
            await asyncio.wait_for(side, 30)
    finally:
        await listener.close()
        await pipeline.settle_background()  # the artifacts' deletion, due once the value was handed over
        await aws.close_clients()
    value = result.get_deserialized() if result is not None else None
    return value, stdout, stderr, status, listener


def jobs_named(emulator: Emulator, service: str, name: str) -> list[dict]:
    if service == "braket":
        # Job ARNs end in a UUID (not the name), and SearchJobs filters only by jobArn and createdAt.
        pages = boto(emulator, "braket").get_paginator("search_jobs").paginate(filters=[])
        return [j for page in pages for j in page["jobs"] if j["jobName"] == name]
    sagemaker = boto(emulator, "sagemaker")
    found = sagemaker.list_training_jobs(NameContains=name)["TrainingJobSummaries"] if name else sagemaker.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    return [j for j in found if j["TrainingJobName"] == name]


def job_name_of(listener: Listener) -> str:
    """The job's name, as the job handle records it (a Braket ARN ends in a UUID, not the name)."""
    (handle,) = listener.job_handles
    return handle["job_name"]


@pytest.mark.parametrize("service", SERVICES)
async def test_round_trip(emulator: Emulator, service: str) -> None:
    value, stdout, stderr, status, listener = await execute(executor(emulator, service), add_and_print, 2, b=40)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value == 42
    assert stdout == "stdout says 2+40\n"
    assert "stderr says hello\n" in stderr
    # The job handle was recorded, and it names the one job the emulator ran for this electron.
    (handle,) = listener.job_handles
    assert handle["service"] == service and handle["region"] == "us-east-1"
    assert len(jobs_named(emulator, service, job_name_of(listener))) == 1


@pytest.mark.parametrize("service", SERVICES)
async def test_custom_exception_reaches_the_node(emulator: Emulator, service: str) -> None:
    value, stdout, stderr, status, _ = await execute(executor(emulator, service), raise_custom, "bad input 7")
    assert status == RESULT_STATUS.FAILED
    assert value is None
    assert "ElectronError" in stderr and "bad input 7" in stderr
    # The remote traceback, not just the message: the frame of the electron's function. (Its source
    # line is shown only when the job can read the file: cloudpickle >= 3.1.3 names by-value code
    # "<dynamic-code>", which no job can, so the frame is what is checked.)
    assert "Traceback (most recent call last)" in stderr
    assert re.search(r'File "[^"]+", line \d+, in raise_custom\n', stderr), stderr


async def running_job(emulator: Emulator, listener: Listener) -> str:
    """Wait until the electron's job has a live process whose task has started; return the job name."""
    while not listener.job_handles:
        await asyncio.sleep(0.1)
    name = job_name_of(listener)
    for _ in range(300):
        jobs = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(f"{emulator.url}/_byoc/jobs").read()))
        if any(j["name"] == name and j.get("pid") for j in jobs):
            await asyncio.sleep(1.0)  # let the task itself start
            return name
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {name} never started")


@pytest.mark.parametrize("service", SERVICES)
async def test_killed_job_fails_with_a_clear_reason(emulator: Emulator, service: str) -> None:
    async def kill(listener: Listener) -> None:
        name = await running_job(emulator, listener)
        request = urllib.request.Request(f"{emulator.url}/_byoc/jobs/{name}/kill", method="POST")
        await asyncio.to_thread(urllib.request.urlopen, request)

    value, stdout, stderr, status, _ = await execute(executor(emulator, service), sleep_then_return, 60, meanwhile=kill)
    assert status == RESULT_STATUS.FAILED
    assert f"{service} job" in stderr and ("ended FAILED" in stderr or "ended Failed" in stderr), stderr
    # Braket's reason names the signal here (local mode's choice: unconfirmed); SageMaker's carries the
    # code a container runtime reports, 137, and nothing else (as users report it).
    assert ("SIGKILL" if service == "braket" else "AlgorithmError: , exit code: 137") in stderr, stderr


@pytest.mark.parametrize("service", SERVICES)
async def test_cancel_requested_mid_run_cancels_the_job(emulator: Emulator, service: str) -> None:
    async def cancel(listener: Listener) -> None:
        await running_job(emulator, listener)
        listener.cancel_requested = True

    value, stdout, stderr, status, listener = await execute(executor(emulator, service), sleep_then_return, 60, meanwhile=cancel)
    assert status == RESULT_STATUS.CANCELLED
    (job,) = jobs_named(emulator, service, job_name_of(listener))
    assert (job.get("status") or job.get("TrainingJobStatus")) in ("CANCELLED", "Stopped")


@pytest.mark.parametrize("service", SERVICES)
async def test_cancel_before_submission_creates_no_job(emulator: Emulator, service: str) -> None:
    ex = executor(emulator, service)
    listener = Listener(ex)
    listener.cancel_requested = True
    function = partial(wrapper_fn, TransportableObject(add_and_print), [], [])
    try:
        _, _, _, status = await ex.execute(function, [TransportableObject(1), TransportableObject(2)], {}, "d-cancel-early", "/tmp", 1)
    finally:
        await listener.close()
        await aws.close_clients()
    assert status == RESULT_STATUS.CANCELLED
    assert listener.job_handles == []


@pytest.mark.parametrize("service", SERVICES)
async def test_missing_bucket_fails_before_any_job(emulator: Emulator, service: str) -> None:
    before = len(jobs_named(emulator, service, "")) if service == "sagemaker" else None
    _, _, stderr, status, listener = await execute(executor(emulator, service, s3_bucket_name="no-such-bucket"), add_and_print, 1, 2)
    assert status == RESULT_STATUS.FAILED
    assert "no-such-bucket" in stderr and "HeadBucket" in stderr
    assert listener.job_handles == []
    if before is not None:
        assert len(jobs_named(emulator, service, "")) == before


async def test_environment_reaches_the_task_on_both_services(emulator: Emulator) -> None:
    import os

    def read(name: str) -> str | None:
        return os.environ.get(name)

    for service in SERVICES:
        value, _, stderr, status, _ = await execute(executor(emulator, service, environment={"BYOC_GREETING": service}), read, "BYOC_GREETING")
        assert status == RESULT_STATUS.COMPLETED, stderr
        assert value == service


@pytest.mark.parametrize("service", SERVICES)
async def test_max_runtime_exceeded_fails_the_node_with_the_reason(emulator, service: str) -> None:
    _, _, stderr, status, _ = await execute(executor(emulator, service, max_runtime=2), sleep_then_return, 60)
    assert status == RESULT_STATUS.FAILED
    assert "MaxRuntimeExceeded" in stderr or "MAX_RUNTIME_EXCEEDED" in stderr or "maxRuntimeInSeconds" in stderr, stderr


def artifacts(emulator, prefix: str) -> list[str]:
    s3 = boto(emulator, "s3")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.mark.parametrize("service", SERVICES)
async def test_artifacts_deleted_after_a_verified_result_kept_after_failure(emulator, service: str) -> None:
    _, _, stderr, status, listener = await execute(executor(emulator, service, s3_prefix="clean"), add_and_print, 1, 1)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert artifacts(emulator, "clean/") == []
    _, _, _, status, listener = await execute(executor(emulator, service, s3_prefix="kept"), raise_custom, "x")
    assert status == RESULT_STATUS.FAILED
    kept = artifacts(emulator, "kept/")
    assert any(k.endswith("payload/task.byoc") for k in kept) and any(k.endswith("model.tar.gz") for k in kept)
    _, _, _, status, _ = await execute(executor(emulator, service, s3_prefix="keep", keep_artifacts=True), add_and_print, 1, 1)
    assert status == RESULT_STATUS.COMPLETED
    assert any(k.endswith("model.tar.gz") for k in artifacts(emulator, "keep/"))


@pytest.mark.parametrize("service", SERVICES)
async def test_job_events_become_progress_lines(emulator, service: str) -> None:
    _, _, stderr, status, _ = await execute(executor(emulator, service), add_and_print, 1, 2)
    assert status == RESULT_STATUS.COMPLETED
    progress = [line for line in stderr.splitlines() if line.startswith(f"[byoc] {service} job ")]
    expected = ["RUNNING", "COMPLETED"] if service == "braket" else ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    seen = " ".join(progress)
    positions = [seen.find(word) for word in expected]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), progress


async def test_log_follower_reads_every_line_once_across_pages(emulator) -> None:
    """Many log events over several pages: the follower returns each exactly once, in order."""
    from byoc_executor.joblogs import LogFollower

    logs = boto(emulator, "logs")
    group, stream = "/aws/sagemaker/TrainingJobs", f"follow-{uuid.uuid4().hex[:8]}/algo-1-1"
    logs.create_log_group(logGroupName=group) if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] else None
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)

    from aiobotocore.session import AioSession

    async with AioSession().create_client(
        "logs", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    ) as client:
        follower = LogFollower(client, group, stream.split("/")[0] + "/")
        assert await follower.poll() == []
        seen: list[str] = []
        for batch in range(3):
            events = [{"timestamp": now + batch * 10_000 + i, "message": f"b{batch} m{i:05d}"} for i in range(4000)]
            for chunk in range(0, len(events), 1000):
                logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events[chunk : chunk + 1000])
            seen += await follower.poll()
        assert await follower.poll() == []
    expected = [f"b{b} m{i:05d}" for b in range(3) for i in range(4000)]
    assert seen == expected

