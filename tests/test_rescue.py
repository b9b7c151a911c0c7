"""``byoc-executor jobs | cancel | result`` against the emulator over HTTP, both services, no Covalent server.

The jobs are real executor jobs (``execute()`` as Covalent's dispatcher calls it); the commands run
as subprocesses of this venv's console script. ``result`` must read a value only through the
payload the job's request pins: a result planted without the key, and a payload replaced after
submission together with a result made for it, are refused before anything is unpickled.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import uuid
from functools import partial
from pathlib import Path

import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS
from covalent._workflow.transportable_object import TransportableObject
from covalent.executor.utils.wrappers import wrapper_fn

from byoc_executor import aws, codec
from byoc_executor.container import byoc_entry as contract
from tests.covalent_listener import Listener
from tests.rescue_support import CANCELLED, RUNNING, boto, cli, jobs_json, status_of
from tests.test_executor_emulator import execute, executor
from tests.test_result_auth import description, forged_archive, results_archive_key

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SERVICES = ["braket", "sagemaker"]


def answer(x: int) -> dict:
    print("answering", x)
    return {"answer": x, "squares": [i * i for i in range(x)]}


def nap(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "woke"


def put(emulator, bucket: str, key: str, body: bytes) -> None:
    boto(emulator, "s3").put_object(Bucket=bucket, Key=key, Body=body)


@pytest.mark.parametrize("service", SERVICES)
async def test_result_reads_a_finished_job_and_refuses_forgeries(emulator, service: str, tmp_path: Path) -> None:
    value, _, stderr, status, listener = await execute(executor(emulator, service, keep_artifacts=True), answer, 4)
    assert status == RESULT_STATUS.COMPLETED, stderr
    (handle,) = listener.job_handles
    job_id = handle["job_id"]

    done = await asyncio.to_thread(cli, emulator, "result", job_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(value) == "{'answer': 4, 'squares': [0, 1, 4, 9]}"
    out = tmp_path / "value.pickle"
    done = await asyncio.to_thread(cli, emulator, "result", job_id, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert pickle.loads(out.read_bytes()) == value
    if service == "braket":  # a Braket job by its name: matched against SearchJobs' jobName, never taken from the ARN
        done = await asyncio.to_thread(cli, emulator, "result", handle["job_name"])
        assert done.returncode == 0 and "'answer': 4" in done.stdout, done.stderr

    (listed,) = await asyncio.to_thread(jobs_json, emulator, "--dispatch", _dispatch_of(emulator, service, handle))
    assert listed["job_id"] == job_id and listed["state"] == "COMPLETED" and listed["node"] == "3"
    assert listed["billable_seconds"] is not None and listed["started"]

    seen = description(emulator, service, handle)
    bucket, archive_key = results_archive_key(seen, service)
    genuine = boto(emulator, "s3").get_object(Bucket=bucket, Key=archive_key)["Body"].read()
    payload_key = archive_key.split("/output/", 1)[0] + f"/payload/{contract.PAYLOAD_FILE}"
    mark = tmp_path / "unpickled"

    # A result planted with a key of the attacker's: its MAC does not verify; nothing is unpickled.
    put(emulator, bucket, archive_key, forged_archive([bytes.fromhex(codec.encode_task(nap, [], {}).result_key)], mark))
    done = await asyncio.to_thread(cli, emulator, "result", job_id)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "MAC does not verify" in done.stderr and not mark.exists()

    # A payload replaced after submission, with a result made for its key: the payload's header is not
    # the one the job's request pinned (byoc_payload_digest), so its key is not trusted.
    replacement = codec.encode_task(nap, [], {})
    put(emulator, bucket, payload_key, replacement.envelope_bytes())
    put(emulator, bucket, archive_key, forged_archive([bytes.fromhex(replacement.result_key)], mark))
    done = await asyncio.to_thread(cli, emulator, "result", job_id)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "replaced or altered after submission" in done.stderr and not mark.exists()
    # The genuine result is still refused with that payload: the key comes only from a pinned payload.
    put(emulator, bucket, archive_key, genuine)
    assert (await asyncio.to_thread(cli, emulator, "result", job_id)).returncode == 3


def _dispatch_of(emulator, service: str, handle: dict) -> str:
    seen = description(emulator, service, handle)
    tags = seen["tags"] if service == "braket" else {t["Key"]: t["Value"] for t in seen["Tags"]}
    return tags["byoc:dispatch"]


async def _start(ex, fn, args: list, dispatch_id: str, node_id: int):
    listener = Listener(ex)
    function = partial(wrapper_fn, TransportableObject(fn), [], [])
    task = asyncio.create_task(ex.execute(function, [TransportableObject(a) for a in args], {}, dispatch_id, "/tmp", node_id))
    return task, listener


async def test_cancel_stops_one_job_or_every_running_job_of_a_dispatch(emulator) -> None:
    dispatch_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    started = [
        await _start(executor(emulator, "braket"), nap, [120], dispatch_id, 0),
        await _start(executor(emulator, "sagemaker"), nap, [120], dispatch_id, 1),
        await _start(executor(emulator, "sagemaker"), nap, [120], other, 0),
    ]
    try:
        for _, listener in started:
            while not listener.job_handles:
                await asyncio.sleep(0.1)
        names = [listener.job_handles[0]["job_name"] for _, listener in started]
        while not all(status_of(emulator, n) in RUNNING for n in names):
            await asyncio.sleep(0.1)

        running = await asyncio.to_thread(jobs_json, emulator, "--dispatch", dispatch_id, "--running")
        assert sorted((j["service"], j["node"]) for j in running) == [("braket", "0"), ("sagemaker", "1")]
        table = await asyncio.to_thread(cli, emulator, "jobs", "--dispatch", dispatch_id)
        assert table.returncode == 0 and all(n in table.stdout for n in names[:2]) and names[2] not in table.stdout

        done = await asyncio.to_thread(cli, emulator, "cancel", "--dispatch", dispatch_id)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.strip().splitlines()) == 2, done.stdout
        done = await asyncio.to_thread(cli, emulator, "cancel", started[2][1].job_handles[0]["job_id"])
        assert done.returncode == 0, done.stderr
        # The followers see their jobs end (cancelled by someone else: the task's JobStopped).
        results = await asyncio.wait_for(asyncio.gather(*(task for task, _ in started)), 60)
        assert [r[3] for r in results] == [RESULT_STATUS.FAILED] * 3
        assert all(status_of(emulator, n) in CANCELLED for n in names)
        assert await asyncio.to_thread(jobs_json, emulator, "--dispatch", dispatch_id, "--running") == []
    finally:
        for task, listener in started:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await listener.close()
        await aws.close_clients()


async def test_result_of_a_running_job_says_so(emulator) -> None:
    dispatch_id = str(uuid.uuid4())
    task, listener = await _start(executor(emulator, "sagemaker"), nap, [60], dispatch_id, 0)
    try:
        while not listener.job_handles:
            await asyncio.sleep(0.1)
        done = await asyncio.to_thread(cli, emulator, "result", listener.job_handles[0]["job_id"])
        assert done.returncode == 2 and "still" in done.stderr, done.stderr
        done = await asyncio.to_thread(cli, emulator, "result", "cov-no-such-job-anywhere")
        assert done.returncode == 2 and "no Braket or SageMaker job named" in done.stderr, done.stderr
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.close()
        await aws.close_clients()
