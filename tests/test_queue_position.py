"""Queue positions through the executor: a Braket job queued behind others counts down in its node's stderr.

The executor asks GetJob for ``queueInfo`` and writes a ``[byoc]`` line "queue position N" each time
the position changes (``follow.py``). The emulator ranks a QUEUED hybrid job among the QUEUED jobs
of the same device in the same region, oldest first (``local/hybrid_jobs.py``
``BraketApi.queue_position``). Here several electrons run at once, started a little apart, on an
emulator whose jobs wait long enough in the queue that each later job sees the earlier ones leave.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from functools import partial

import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS
from covalent._workflow.transportable_object import TransportableObject
from covalent.executor.utils.wrappers import wrapper_fn

from byoc_executor import aws, pipeline
from byoc_executor.local import Emulator
from byoc_executor.local.pytest_plugin import emulator_client
from tests.conftest import BUCKET
from tests.covalent_listener import Listener
from tests.test_executor_emulator import boto, executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])

PHASE = 2.5
"""Seconds of each phase: a Braket job is QUEUED for two of them (queued, starting), 5 s."""
GAP = 1.5
"""Seconds between two electrons' starts: each job is created while those before it still wait."""
LOCAL = "local:braket/braket_sv"
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
POSITION = re.compile(r"queue position (\S+)")


def square(x: int) -> int:
    return x * x


@pytest.fixture(scope="module")
def slow_queue(tmp_path_factory: pytest.TempPathFactory):
    """An emulator of its own: the ranks count every Braket job it holds."""
    with Emulator(root=tmp_path_factory.mktemp("queue-position"), phase_delay=PHASE, kill_grace=1.0) as em:
        emulator_client(em, "s3").create_bucket(Bucket=BUCKET)
        yield em


async def run_electron(emulator: Emulator, device: str, start_after: float, x: int, dispatch_id: str, node_id: int):
    """One electron through ``execute()``, as Covalent's dispatcher calls it, ``start_after`` s from now."""
    await asyncio.sleep(start_after)
    ex = executor(emulator, "braket", device=device, poll_freq=0.5)
    listener = Listener(ex)  # each executor has its own queues to the dispatcher, as in Covalent
    try:
        function = partial(wrapper_fn, TransportableObject(square), [], [])
        result, _, stderr, status = await ex.execute(function, [TransportableObject(x)], {}, dispatch_id, "/tmp", node_id)
    finally:
        await listener.close()
    return result.get_deserialized() if result is not None else None, stderr, status, listener.job_handles[0]["job_id"]


async def test_a_job_queued_behind_others_reports_its_position_counting_down(slow_queue: Emulator) -> None:
    dispatch_id = str(uuid.uuid4())
    # Three jobs on one device, GAP apart, and between the first two one on another device, which
    # is in another queue: it neither waits behind them nor holds them back.
    plan = [(LOCAL, 0.0), (SV1, GAP / 2), (LOCAL, GAP), (LOCAL, 2 * GAP)]
    try:
        runs = await asyncio.gather(
            *(run_electron(slow_queue, device, start, node_id, dispatch_id, node_id) for node_id, (device, start) in enumerate(plan))
        )
    finally:
        await pipeline.settle_background()
        await aws.close_clients()
    positions = []
    for node_id, (value, stderr, status, _) in enumerate(runs):
        assert status == RESULT_STATUS.COMPLETED, stderr
        assert value == node_id * node_id
        positions.append(POSITION.findall(stderr))
    # One line per change, in order: the last job was third in its queue, then second, then first.
    assert positions == [["1"], ["1"], ["2", "1"], ["3", "2", "1"]], positions
    # Every job left the queue: once it ran, GetJob showed no position ("None", with a message).
    braket = boto(slow_queue, "braket")
    for *_, arn in runs:
        info = braket.get_job(jobArn=arn, additionalAttributeNames=["QueueInfo"])["queueInfo"]
        assert info["queue"] == "JOBS_QUEUE" and info["position"] == "None" and "COMPLETED" in info["message"]
