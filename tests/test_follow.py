"""Following a job through a bad day: the error policy, slow dispatchers, lost jobs, deadlines.

The executor against the emulator over loopback HTTP (``execute()``, Covalent's own entry, with
the real task wrapper). Faults are whole windows, not rates: every call of an operation fails for
a while, longer than botocore's retries last, which is what kills healthy jobs when a follower
gives up too early. What the executor did is read back through the emulator (its request log and
job list), never from the executor.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import botocore.exceptions
import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS

from byoc_executor import aws, policy
from byoc_executor.errors import AccessDeniedError, AWSError, ResourceNotFoundError, ThrottledError
from byoc_executor.local import Emulator
from byoc_executor.local.faults import FaultPlan, FaultRule
from byoc_executor.local.pytest_plugin import emulator_client
from tests.emulator_helpers import DESCRIBE, STOP, Calls, not_found
from tests.test_executor_emulator import execute, executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SERVICES = ["braket", "sagemaker"]


def nap_then_square(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


# --- the policy, as pure logic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (ThrottledError("GetJob", "ThrottlingException", "Rate exceeded", http_status=429), policy.Verdict.TRANSIENT),
        (AWSError("DescribeTrainingJob", "InternalFailure", "x", http_status=500), policy.Verdict.TRANSIENT),
        (AWSError("GetJob", "SomethingNew", "x", http_status=503), policy.Verdict.TRANSIENT),
        (AWSError("GetJob", "ExpiredTokenException", "x", http_status=403), policy.Verdict.TRANSIENT),
        (ResourceNotFoundError("GetJob", "ResourceNotFoundException", "x", http_status=404), policy.Verdict.NOT_FOUND),
        (ResourceNotFoundError("DescribeTrainingJob", "ValidationException", "not found", http_status=400), policy.Verdict.NOT_FOUND),
        (AccessDeniedError("GetJob", "AccessDeniedException", "x", http_status=403), policy.Verdict.FATAL),
        (AWSError("GetJob", "SomethingNew", "x", http_status=400), policy.Verdict.FATAL),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://braket"), policy.Verdict.TRANSIENT),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="https://braket"), policy.Verdict.TRANSIENT),
        (botocore.exceptions.NoCredentialsError(), policy.Verdict.TRANSIENT),
        (asyncio.TimeoutError(), policy.Verdict.TRANSIENT),
        (ConnectionResetError(), policy.Verdict.TRANSIENT),
        (ValueError("a bug"), policy.Verdict.FATAL),
    ],
)
def test_policy_judges_by_code_and_class(error: BaseException, verdict: policy.Verdict) -> None:
    assert policy.classify(error) is verdict


def test_readme_has_the_policy_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert policy.policy_table() in readme, "regenerate the README table: python -m byoc_executor.policy"


# --- helpers ------------------------------------------------------------------------------------------------


def job_status(emulator: Emulator, name: str) -> str:
    return next(j["status"] for j in emulator.jobs() if j["name"] == name)


@pytest.fixture(autouse=True)
def no_faults_left(emulator: Emulator):
    yield
    emulator.clear_faults()


@pytest.fixture
def few_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore gives up on a call after 2 attempts: an outage of seconds outlasts its retries."""
    monkeypatch.setattr(aws, "RETRY_ATTEMPTS", 2)


# --- outages that pass -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_a_status_outage_past_botocores_retries_leaves_the_job_alone(emulator: Emulator, service: str, few_retries: None) -> None:
    """Every status call fails for 15 s mid-job (each after botocore's retries): the job is never
    stopped, the electron gets its value, and the node says what happened."""

    async def outage(listener) -> None:
        while not listener.job_handles:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        emulator.faults = FaultPlan({service: FaultRule(1.0, kinds={"throttle": 1.0, "500": 1.0}, operations=(DESCRIBE[service],))})
        await asyncio.sleep(15.0)
        emulator.faults = None

    with Calls(emulator) as calls, pytest.MonkeyPatch.context() as m:
        m.setattr("byoc_executor.follow.OUTAGE_REPORT_AFTER", 5.0)
        value, _, stderr, status, listener = await execute(
            executor(emulator, service, poll_freq=1.0), nap_then_square, 7, 22.0, meanwhile=outage
        )
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value == 49
    assert calls.count(STOP[service]) == 0  # nobody asked the service to stop the job
    assert job_status(emulator, listener.job_handles[0]["job_name"]) in ("COMPLETED", "Completed")
    assert "status calls failing for" in stderr and "still following, the job is not affected" in stderr
    assert "status calls answer again after" in stderr


@pytest.mark.parametrize("service", SERVICES)
async def test_a_slow_dispatcher_neither_fails_the_node_nor_confuses_its_answers(emulator: Emulator, service: str) -> None:
    """Covalent's dispatcher answers 7 s late (its executors give up after 5 s) for 15 s: the
    electron completes, and the late answers are not taken for the next questions'."""

    async def slow(listener) -> None:
        listener.slow(7.0, 15.0)

    with Calls(emulator) as calls:
        value, _, stderr, status, listener = await execute(executor(emulator, service), nap_then_square, 6, 18.0, meanwhile=slow)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value == 36
    assert calls.count(STOP[service]) == 0
    assert len(listener.job_handles) == 1  # recorded once the dispatcher caught up


# --- answers that do not pass -------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_a_job_deleted_behind_the_executors_back_ends_the_node_clearly(
    emulator: Emulator, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "NOT_FOUND_WINDOW", 2.0)
    gone = {"yes": False}

    def hook(call):
        return not_found(service) if gone["yes"] and call.operation == DESCRIBE[service] else None

    async def delete(listener) -> None:
        while not listener.job_handles:
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.0)
        gone["yes"] = True

    emulator.request_hooks.append(hook)
    try:
        with Calls(emulator) as calls:
            _, _, stderr, status, _ = await execute(executor(emulator, service), nap_then_square, 2, 20.0, meanwhile=delete)
    finally:
        emulator.request_hooks.remove(hook)
    assert status == RESULT_STATUS.FAILED
    assert "no longer exists" in stderr and "deleted outside the executor" in stderr, stderr
    assert calls.count(STOP[service]) == 0  # nothing to stop


@pytest.mark.parametrize("service", SERVICES)
async def test_not_found_right_after_create_is_waited_out(emulator: Emulator, service: str) -> None:
    """The job APIs are eventually consistent: a job may be "not found" for a moment after create."""
    created: dict[str, float] = {}
    served = {"not found": 0}

    def hook(call):
        if call.operation in ("CreateJob", "CreateTrainingJob"):
            created["at"] = time.monotonic()
        if call.operation == DESCRIBE[service] and time.monotonic() - created.get("at", 0.0) < 3.0:
            served["not found"] += 1
            return not_found(service)
        return None

    emulator.request_hooks.append(hook)
    try:
        value, _, stderr, status, _ = await execute(executor(emulator, service), nap_then_square, 3, 1.0)
    finally:
        emulator.request_hooks.remove(hook)
    assert served["not found"] >= 1, "the executor never asked within the window: nothing was waited out"
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value == 9


# --- deadlines ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_a_job_queued_past_queue_timeout_is_cancelled_naming_the_setting(slow_queue: Emulator, service: str) -> None:
    _, _, stderr, status, listener = await execute(executor(slow_queue, service, queue_timeout=2), nap_then_square, 1, 0.0)
    assert status == RESULT_STATUS.FAILED
    assert "queue_timeout = 2 s" in stderr and "it was cancelled" in stderr, stderr
    name = listener.job_handles[0]["job_name"]
    deadline = time.monotonic() + 60
    while job_status(slow_queue, name) not in ("CANCELLED", "Stopped"):
        assert time.monotonic() < deadline, job_status(slow_queue, name)
        await asyncio.sleep(0.2)


# --- SageMaker's stop: "already ended" and "no such job" are one error code --------------------------------------


async def test_sagemaker_stop_of_an_ended_job_is_quiet_and_of_an_unknown_one_is_not_found(emulator: Emulator) -> None:
    """StopTrainingJob answers ValidationException both for a job that already ended and for a name
    that does not exist (services/sagemaker.py describes the job to tell them apart)."""
    from byoc_executor import pipeline

    ex = executor(emulator, "sagemaker")
    value, _, stderr, status, listener = await execute(ex, nap_then_square, 4, 0.0)
    assert (status, value) == (RESULT_STATUS.COMPLETED, 16), stderr
    name = listener.job_handles[0]["job_name"]
    assert job_status(emulator, name) == "Completed"
    unknown = "cov-no-such-job-0123456789"
    for job in (name, unknown):  # the premise: one answer for both
        with pytest.raises(botocore.exceptions.ClientError) as answer:
            emulator_client(emulator, "sagemaker").stop_training_job(TrainingJobName=job)
        assert answer.value.response["Error"]["Code"] == "ValidationException"
    try:
        with Calls(emulator) as calls:
            jobs = await pipeline.service_for(ex.settings())
            await jobs.cancel(name)  # returns quietly: the job ended before the stop
            assert (calls.count("StopTrainingJob"), calls.count("DescribeTrainingJob")) == (1, 1)
            with pytest.raises(ResourceNotFoundError) as err:
                await jobs.cancel(unknown)
            assert err.value.operation == "DescribeTrainingJob" and err.value.resource == unknown
            assert (calls.count("StopTrainingJob"), calls.count("DescribeTrainingJob")) == (2, 2)
    finally:
        await aws.close_clients()
    assert job_status(emulator, name) == "Completed"  # the stop changed nothing
