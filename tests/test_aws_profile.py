"""The emulator's AWS profile (``local/aws_profile.py``): AWS's timing and limits, played faster.

Against the emulator over HTTP with plain boto3 clients (the wire answers: throttling in each API's
own shape, the not-found window, the log lag, the instance quota, the phases' lengths), then the
executor itself under the profile on its own scaled clock: several electrons at once through
throttling and a full instance quota all come back, and a quota nothing here can free is refused
with the fix before any job exists.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
import uuid
from functools import partial

import boto3
import botocore.config
import botocore.session
import cloudpickle
import pytest
from botocore.exceptions import ClientError
from covalent._shared_files.util_classes import RESULT_STATUS
from covalent._workflow.transportable_object import TransportableObject
from covalent.executor.utils.wrappers import wrapper_fn

from byoc_executor import aws, clock, pipeline
from byoc_executor.local import Emulator
from byoc_executor.local.aws_profile import (
    AWS_RATE_LIMITS, AwsProfile, PhaseTimes, RateLimit, TokenBucket, profile,
)
from byoc_executor.local.job_types import Timing
from tests.emulator_helpers import (
    REGION, braket_request, greet, sagemaker_request, sleep_long, unique, upload_payload, upload_source, wait_until,
)
from tests.covalent_listener import Listener
from tests.test_executor_emulator import execute, executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(180)
SCALE = 60.0
BUCKET = "profiled"


def printer(lines: int) -> int:
    for i in range(lines):
        print(f"line {i}", flush=True)
    return lines


def triple(x: int) -> int:
    return 3 * x


def no_retry(url: str, service: str):
    return boto3.client(
        service, endpoint_url=url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


def usage(emulator: Emulator) -> dict:
    with urllib.request.urlopen(f"{emulator.url}/_byoc/usage") as answer:
        return json.load(answer)


# --- pure logic ---------------------------------------------------------------------------------------


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(RateLimit(rate=2, burst=3, source="test"), at=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.4)  # 0.8 of a token
    assert bucket.take(0.5)  # one token after half a second at 2/s
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # refills to the burst, no further


def test_the_profile_plays_aws_seconds_at_its_time_scale() -> None:
    fast = profile("aws", 60, image_gb=2.0)
    times = fast.phases["sagemaker"]
    assert fast.phase_seconds("sagemaker")["starting"] == pytest.approx(times.starting / 60)
    assert fast.phase_seconds("sagemaker")["downloading"] == pytest.approx((times.downloading + 2.0 * times.downloading_per_gb) / 60)
    assert profile("none") is None
    with pytest.raises(ValueError, match="no profile named"):
        profile("azure")
    with pytest.raises(ValueError, match="time_scale"):
        profile("aws", 0)


def test_timing_without_a_profile_is_the_fast_default() -> None:
    timing = Timing(phase_delay=0.3)
    assert timing.delay("braket", "queued") == 0.3
    assert timing.delay("sagemaker", "starting", warm=True) == 0.0  # a warm pool: nothing to provision
    profiled = Timing(phases={"sagemaker": {"starting": 2.0, "warm_starting": 0.5}})
    assert profiled.delay("sagemaker", "starting") == 2.0 and profiled.delay("sagemaker", "starting", warm=True) == 0.5


def test_every_limited_operation_is_one_the_services_models_name() -> None:
    """The quota table names real operations (botocore's models), not ones nobody sends."""
    session = botocore.session.get_session()
    names = {
        service: set(session.get_service_model(service).operation_names) | {"*"}
        for service in {s for s, _ in AWS_RATE_LIMITS}
    }
    unknown = [f"{s}.{op}" for s, op in AWS_RATE_LIMITS if op not in names[s]]
    assert not unknown


# --- the wire, under a profile ----------------------------------------------------------------------------


def tight(**over) -> AwsProfile:
    limits = {
        ("braket", "GetJob"): RateLimit(0.01, 1, "test"),
        ("sagemaker", "DescribeTrainingJob"): RateLimit(0.01, 1, "test"),
        ("logs", "GetLogEvents"): RateLimit(0.01, 1, "test"),
    }
    return AwsProfile(time_scale=SCALE, rate_limits=limits, **over)


@pytest.fixture(scope="module")
def tight_emulator(tmp_path_factory: pytest.TempPathFactory):
    with Emulator(root=tmp_path_factory.mktemp("tight"), profile=tight(), kill_grace=1.0) as em:
        yield em


def test_throttled_requests_get_each_apis_own_error(tight_emulator: Emulator) -> None:
    url = tight_emulator.url
    answers = {}
    calls = {
        "braket": lambda c: c.get_job(jobArn=f"arn:aws:braket:{REGION}:123456789012:job/00000000-0000-0000-0000-000000000000"),
        "sagemaker": lambda c: c.describe_training_job(TrainingJobName="nobody"),
        "logs": lambda c: c.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="nobody/algo-1"),
    }
    for service, call in calls.items():
        c = no_retry(url, service)
        with pytest.raises(ClientError) as first:
            call(c)  # the one token: answered (not found)
        assert first.value.response["Error"]["Code"] != "ThrottlingException"
        with pytest.raises(ClientError) as second:
            call(c)
        answers[service] = (second.value.response["Error"]["Code"], second.value.response["ResponseMetadata"]["HTTPStatusCode"])
    # botocore's models: Braket's ThrottlingException is a 429; SageMaker's and Logs' errors are 400s.
    assert answers == {"braket": ("ThrottlingException", 429), "sagemaker": ("ThrottlingException", 400),
                       "logs": ("ThrottlingException", 400)}
    requests = usage(tight_emulator)["requests"]
    assert requests["braket.GetJob"]["throttled"] >= 1 and requests["sagemaker.DescribeTrainingJob"]["requests"] >= 2
    assert usage(tight_emulator)["time_scale"] == SCALE


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory):
    """AWS's profile at 60x, with a long not-found window and log lag so the tests can see them."""
    slow_to_show = AwsProfile(time_scale=SCALE, not_found_window=90.0, log_lag=240.0, instance_quota=1)
    with Emulator(root=tmp_path_factory.mktemp("profiled"), profile=slow_to_show, kill_grace=1.0) as em:
        no_retry(em.url, "s3").create_bucket(Bucket=BUCKET)
        yield em


def test_a_new_training_job_is_not_found_for_a_moment_and_its_last_lines_come_late(emulator: Emulator) -> None:
    s3, sagemaker, logs = (no_retry(emulator.url, s) for s in ("s3", "sagemaker", "logs"))
    name, prefix = unique("sm"), unique("p")
    hp = upload_payload(s3, BUCKET, prefix, printer, 3)
    sagemaker.create_training_job(**sagemaker_request(name, BUCKET, prefix, hp))
    with pytest.raises(ClientError) as hidden:
        sagemaker.describe_training_job(TrainingJobName=name)
    assert hidden.value.response["Error"]["Message"] == "Requested resource not found."
    wait_until(lambda: _found(sagemaker, name), timeout=10)  # 90 AWS s = 1.5 s
    wait_until(lambda: sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Completed", timeout=30)
    described = sagemaker.describe_training_job(TrainingJobName=name)
    starting = [t for t in described["SecondaryStatusTransitions"] if t["Status"] == "Starting"][0]
    lasted = (starting["EndTime"] - starting["StartTime"]).total_seconds()
    assert lasted >= 0.9 * AwsProfile().phases["sagemaker"].starting / SCALE  # 120 AWS s = 2 s
    # The job has ended, but lines written in its last 240 AWS s (4 s) are not readable yet.
    assert "line 2" not in _messages(logs, name)
    wait_until(lambda: "line 2" in _messages(logs, name), timeout=15)


def test_a_new_hybrid_job_is_not_found_for_a_moment(emulator: Emulator) -> None:
    s3, braket = no_retry(emulator.url, "s3"), no_retry(emulator.url, "braket")
    name, prefix = unique("bk"), unique("p")
    hp = upload_payload(s3, BUCKET, prefix, greet, 1)
    arn = braket.create_job(**braket_request(name, BUCKET, prefix, hp, upload_source(s3, BUCKET, prefix)))["jobArn"]
    with pytest.raises(ClientError) as hidden:
        braket.get_job(jobArn=arn)
    assert hidden.value.response["Error"]["Code"] == "ResourceNotFoundException"
    wait_until(lambda: _found(braket, arn), timeout=10)
    wait_until(lambda: braket.get_job(jobArn=arn)["status"] == "COMPLETED", timeout=30)


def test_a_create_over_the_instance_quota_is_refused_as_aws_refuses_it(emulator: Emulator) -> None:
    s3, sagemaker, braket = (no_retry(emulator.url, s) for s in ("s3", "sagemaker", "braket"))
    wait_until(lambda: all(j["status"] in ("Completed", "COMPLETED", "Failed", "FAILED") for j in emulator.jobs()), timeout=30)
    first, prefix = unique("sm"), unique("p")
    hp = upload_payload(s3, BUCKET, prefix, sleep_long, 30)
    sagemaker.create_training_job(**sagemaker_request(first, BUCKET, prefix, hp))  # the quota's one instance
    try:
        with pytest.raises(ClientError) as refused:
            sagemaker.create_training_job(**sagemaker_request(unique("sm"), BUCKET, prefix, hp))
        assert refused.value.response["Error"]["Code"] == "ResourceLimitExceeded"
        assert "ml.m5.large" in refused.value.response["Error"]["Message"]
        # Each service has its own quota: a hybrid job's instance is not a training job's.
        braket.create_job(**braket_request(unique("bk"), BUCKET, prefix, hp, upload_source(s3, BUCKET, prefix)))
        with pytest.raises(ClientError) as refused:
            braket.create_job(**braket_request(unique("bk"), BUCKET, prefix, hp, upload_source(s3, BUCKET, prefix)))
        assert refused.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    finally:
        for job in emulator.jobs():
            if job["status"] in ("InProgress", "RUNNING", "QUEUED"):
                if job["service"] == "sagemaker":
                    _quietly(lambda: sagemaker.stop_training_job(TrainingJobName=job["name"]))
                else:
                    _quietly(lambda: braket.cancel_job(jobArn=job["arn"]))
        wait_until(lambda: all(j["status"] not in ("InProgress", "RUNNING", "QUEUED", "Stopping", "CANCELLING")
                               for j in emulator.jobs()), timeout=30)


def _quietly(call) -> None:
    try:
        call()
    except ClientError:
        pass


def _found(client, ident: str) -> bool:
    try:
        if ident.startswith("arn:"):
            client.get_job(jobArn=ident)
        else:
            client.describe_training_job(TrainingJobName=ident)
        return True
    except ClientError:
        return False


def _messages(logs, name: str) -> list[str]:
    group = "/aws/sagemaker/TrainingJobs"
    try:
        streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/")["logStreams"]
    except ClientError:
        return []
    return [e["message"] for s in streams
            for e in logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"], startFromHead=True)["events"]]


# --- the executor under the profile, on its own scaled clock -----------------------------------------------


@pytest.fixture
def scaled_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "SCALE", SCALE)


@pytest.fixture(scope="module")
def crowded_emulator(tmp_path_factory: pytest.TempPathFactory):
    """Two instances per type, one create per 20 AWS s (burst 1), a status call per AWS second."""
    limits = {
        ("braket", "CreateJob"): RateLimit(0.05, 1, "test"),
        ("braket", "GetJob"): RateLimit(1, 2, "test"),
        ("sagemaker", "CreateTrainingJob"): RateLimit(0.05, 1, "test"),
        ("sagemaker", "DescribeTrainingJob"): RateLimit(1, 2, "test"),
    }
    crowded = AwsProfile(time_scale=SCALE, instance_quota=2, rate_limits=limits,
                         phases={"braket": PhaseTimes(30, 30, 30, 0, 10), "sagemaker": PhaseTimes(0, 60, 30, 0, 10)})
    with Emulator(root=tmp_path_factory.mktemp("crowded"), profile=crowded, kill_grace=1.0) as em:
        no_retry(em.url, "s3").create_bucket(Bucket="job-artifacts")
        yield em


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
async def test_electrons_at_once_all_come_back_through_throttling_and_a_full_instance_quota(
    crowded_emulator: Emulator, service: str, scaled_clock: None,
) -> None:
    before = len([j for j in crowded_emulator.jobs() if j["service"] == service])
    # max_runtime: the job process's own second of start-up is a minute of AWS time at 60x.
    executors = [executor(crowded_emulator, service, s3_bucket_name="job-artifacts", poll_freq=10, max_runtime=7200)
                 for _ in range(5)]
    outcomes = await execute_at_once(executors, triple)
    for i, (value, stderr, status) in enumerate(outcomes):
        assert status == RESULT_STATUS.COMPLETED, stderr
        assert value == 3 * i
    stderr = "".join(o[1] for o in outcomes)
    assert "quota is in use" in stderr and "waiting for one of this server's" in stderr
    report = usage(crowded_emulator)
    jobs = [j for j in report["jobs"] if j["service"] == service]
    assert len(jobs) - before == 5  # one job per electron: no create was lost or doubled
    create = "braket.CreateJob" if service == "braket" else "sagemaker.CreateTrainingJob"
    assert report["requests"][create]["throttled"] >= 1
    # Never more than the quota's two instances at once.
    spans = [(j["started"], j["ended"]) for j in jobs[before:]]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2
    assert all(j["billed_instance_seconds"] > 0 for j in jobs[before:])
    assert all(j["end_seen"] is not None and j["end_seen"] >= j["ended"] for j in jobs[before:])  # each end seen, after it


async def execute_at_once(executors: list, fn) -> list[tuple]:
    """``fn(i)`` on executor i, all at once, as one dispatcher runs a fan-out: (value, stderr, status) each."""
    listeners = [Listener(ex) for ex in executors]
    dispatch_id = str(uuid.uuid4())
    try:
        answers = await asyncio.gather(*(
            ex.execute(partial(wrapper_fn, TransportableObject(fn), [], []), [TransportableObject(i)], {}, dispatch_id, "/tmp", i)
            for i, ex in enumerate(executors)
        ))
    finally:
        for listener in listeners:
            await listener.close()
        await pipeline.settle_background()
        await aws.close_clients()
    return [(r.get_deserialized() if r is not None else None, err, status) for r, _, err, status in answers]


async def test_a_quota_nothing_here_can_free_is_refused_with_the_fix(tmp_path, scaled_clock: None) -> None:
    with Emulator(root=tmp_path, profile=AwsProfile(time_scale=SCALE, instance_quota=0), kill_grace=1.0) as em:
        no_retry(em.url, "s3").create_bucket(Bucket="job-artifacts")
        started = time.monotonic()
        value, _, stderr, status, _ = await execute(executor(em, "sagemaker", s3_bucket_name="job-artifacts"), triple, 1)
        assert status == RESULT_STATUS.FAILED and value is None
        assert "ResourceLimitExceeded" in stderr and "Service Quotas" in stderr and "none of this server's jobs" in stderr
        assert em.jobs() == []
        assert time.monotonic() - started < 30  # refused, not waited out for queue_timeout


# --- the final read of a crashed job's logs, under the log lag ---------------------------------------------


def last_words_then_crash() -> None:
    import os
    import signal

    print("last words: the solver diverged at step 7", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no result, no failure file: only the log says why


@pytest.fixture(scope="module")
def lagging_emulator(tmp_path_factory: pytest.TempPathFactory):
    """Real time (scale 1), short phases, and log lines readable 3 s after they are written."""
    lagging = AwsProfile(
        time_scale=1.0, log_lag=3.0, not_found_window=0.0, instance_quota=None, rate_limits={},
        phases={"braket": PhaseTimes(0.05, 0.05, 0.05, 0, 0.05), "sagemaker": PhaseTimes(0, 0.05, 0.05, 0, 0.05)},
    )
    with Emulator(root=tmp_path_factory.mktemp("lagging"), profile=lagging, kill_grace=1.0) as em:
        no_retry(em.url, "s3").create_bucket(Bucket="job-artifacts")
        yield em


async def test_a_crashed_jobs_last_lines_reach_the_node_though_they_arrive_after_its_end(lagging_emulator: Emulator) -> None:
    """CloudWatch delivers lines seconds late: the executor keeps reading after the end (``settle``)."""
    ex = executor(lagging_emulator, "sagemaker", s3_bucket_name="job-artifacts")
    _, _, stderr, status, _ = await execute(ex, last_words_then_crash)
    assert status == RESULT_STATUS.FAILED
    assert "AlgorithmError: , exit code: 137" in stderr  # the service's reason names no cause
    assert "the solver diverged at step 7" in stderr  # the late log line does


async def test_without_settling_the_late_last_lines_are_lost(lagging_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with no reading after the end, the same crash reaches the node without its cause."""
    from byoc_executor import joblogs

    monkeypatch.setattr(joblogs, "SETTLE_MAX", 0.0)
    ex = executor(lagging_emulator, "sagemaker", s3_bucket_name="job-artifacts")
    _, _, stderr, status, _ = await execute(ex, last_words_then_crash)
    assert status == RESULT_STATUS.FAILED
    assert "the solver diverged at step 7" not in stderr


async def test_a_node_cancelled_while_waiting_for_the_quota_creates_no_job(tmp_path, scaled_clock: None) -> None:
    """One electron holds the quota's one instance; a second waits for it and is cancelled meanwhile."""
    with Emulator(root=tmp_path, profile=AwsProfile(time_scale=SCALE, instance_quota=1), kill_grace=1.0) as em:
        no_retry(em.url, "s3").create_bucket(Bucket="job-artifacts")
        holder, waiter = (executor(em, "sagemaker", s3_bucket_name="job-artifacts", max_runtime=7200) for _ in range(2))
        listeners = [Listener(holder), Listener(waiter)]
        dispatch_id = str(uuid.uuid4())

        def run(ex, fn, arg, node_id):
            return ex.execute(partial(wrapper_fn, TransportableObject(fn), [], []), [TransportableObject(arg)], {}, dispatch_id, "/tmp", node_id)

        async def wait_then_cancel():
            while not any(j["status"] == "InProgress" for j in em.jobs()):  # the holder's job has the instance
                await asyncio.sleep(0.05)
            waiting = asyncio.create_task(run(waiter, triple, 5, 1))
            await asyncio.sleep(1.5)  # refused by now, and waiting
            listeners[1].cancel_requested = True
            return await waiting

        try:
            held, waited = await asyncio.gather(run(holder, sleep_long, 4, 0), wait_then_cancel())
        finally:
            for listener in listeners:
                await listener.close()
            await pipeline.settle_background()
            await aws.close_clients()
        assert held[3] == RESULT_STATUS.COMPLETED, held[2]
        assert waited[3] == RESULT_STATUS.CANCELLED, waited[2]
        assert "quota is in use" in waited[2]
        assert len(em.jobs()) == 1  # the cancelled node never got a job
