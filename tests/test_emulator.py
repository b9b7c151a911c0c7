"""The local emulator over real HTTP with plain boto3 clients: validation, job lifecycles, logs,
results, cancellation, timeouts, crashes, idempotency, listing, and the ``byoc-executor local`` CLI.
"""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from byoc_executor.container import byoc_entry
from byoc_executor.local import Emulator

from tests.emulator_helpers import (
    EmulatorClients,
        braket_request, client, explode, greet, log_messages, poll, read_result, sagemaker_request,
        sleep_long, unique, upload_payload, upload_source, wait_until,
    )

BUCKET = "job"  # path-style addressing must cope with a bucket named like the Braket route

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory):
    with Emulator(root=tmp_path_factory.mktemp("jobs"), phase_delay=0.1, kill_grace=1.0) as em:
        client(em.url, "s3").create_bucket(Bucket=BUCKET)
        yield em


@pytest.fixture
def clients(emulator: Emulator) -> EmulatorClients:
    return EmulatorClients(emulator.url)


def start_braket(clients, function, *args, **overrides) -> tuple[str, str, str]:
    name, prefix = unique("bk"), unique("prefix")
    hp = upload_payload(clients.s3, BUCKET, prefix, function, *args)
    source = upload_source(clients.s3, BUCKET, prefix)
    arn = clients.braket.create_job(**braket_request(name, BUCKET, prefix, hp, source, **overrides))["jobArn"]
    return name, prefix, arn


def start_sagemaker(clients, function, *args, **overrides) -> tuple[str, str]:
    name, prefix = unique("sm"), unique("prefix")
    hp = upload_payload(clients.s3, BUCKET, prefix, function, *args)
    clients.sagemaker.create_training_job(**sagemaker_request(name, BUCKET, prefix, hp, **overrides))
    return name, prefix


def braket_until_done(clients, arn: str, timeout: float = 30.0):
    return poll(lambda: clients.braket.get_job(jobArn=arn), lambda r: r["status"],
                lambda r: r["status"] in ("COMPLETED", "FAILED", "CANCELLED"), timeout)


def sagemaker_until_done(clients, name: str, timeout: float = 30.0):
    return poll(lambda: clients.sagemaker.describe_training_job(TrainingJobName=name),
                lambda r: (r["TrainingJobStatus"], r["SecondaryStatus"]),
                lambda r: r["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"), timeout)


def job_pid(emulator: Emulator, name: str) -> int:
    wait_until(lambda: any(j["name"] == name and j["pid"] for j in emulator.jobs()))
    return next(j["pid"] for j in emulator.jobs() if j["name"] == name)


def logged(clients, group: str, name: str, line: str) -> bool:
    try:
        return line in log_messages(clients.logs, group, name)[1]
    except clients.logs.exceptions.ResourceNotFoundException:
        return False  # the group or stream is created with the first batch


def assert_process_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


# --- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, code, fragment",
    [
        ({"jobName": "bad name!"}, "ValidationException", "at 'jobName' failed to satisfy constraint: Member must satisfy regular expression pattern"),
        ({"jobName": "a" * 51}, "ValidationException", "at 'jobName' failed to satisfy constraint: Member must have length less than or equal to 50"),
        ({"instanceConfig": {"instanceType": "ml.m5.huge", "volumeSizeInGb": 30}}, "ValidationException", "at 'instanceConfig.instanceType' failed to satisfy constraint: Member must satisfy enum value set"),
        ({"instanceConfig": {"instanceType": "ml.m5.large", "volumeSizeInGb": 30, "instanceCount": 0}}, "ValidationException", "'instanceConfig.instanceCount' failed to satisfy constraint: Member must have value greater than or equal to 1"),
        ({"roleArn": "arn:aws:iam::12345:role/short"}, "ValidationException", "at 'roleArn' failed to satisfy constraint"),
        ({"algorithmSpecification": {"containerImage": {"uri": "docker.io/library/python:3.11"}}}, "ValidationException", "at 'algorithmSpecification.containerImage.uri' failed to satisfy constraint"),
        ({"deviceConfig": {"device": "sv1"}}, "ValidationException", "at 'deviceConfig.device' failed to satisfy constraint: Member must be a Braket device ARN"),
        ({"outputDataConfig": {"s3Path": "https://example.com/x"}}, "ValidationException", "at 'outputDataConfig.s3Path' failed to satisfy constraint: Member must be an S3 URI"),
        ({"stoppingCondition": {"maxRuntimeInSeconds": 432001}}, "ValidationException", "Member must have value less than or equal to 432000"),
    ],
)
def test_braket_create_job_validation(emulator, change, code, fragment):
    request = braket_request("valid-name", BUCKET, "p", {"k": "v"}, f"s3://{BUCKET}/p/source.tar.gz", **change)
    with pytest.raises(ClientError) as info:
        client(emulator.url, "braket", validate=False).create_job(**request)
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert fragment in info.value.response["Error"]["Message"]


def test_braket_missing_required_field(emulator):
    unchecked = client(emulator.url, "braket", validate=False)  # botocore would refuse it first
    request = braket_request("valid-name", BUCKET, "p", {}, f"s3://{BUCKET}/p/s.tar.gz")
    del request["roleArn"]
    with pytest.raises(ClientError) as info:
        unchecked.create_job(**request)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["Error"]["Message"] == (
        "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null"
    )


@pytest.mark.parametrize(
    "change, code, fragment",
    [
        ({"TrainingJobName": "bad_name"}, "ValidationException", "at 'trainingJobName' failed to satisfy constraint: Member must satisfy regular expression pattern"),
        ({"TrainingJobName": "a" * 64}, "ValidationException", "at 'trainingJobName' failed to satisfy constraint: Member must have length less than or equal to 63"),
        ({"ResourceConfig": {"InstanceType": "ml.m5.huge", "InstanceCount": 1, "VolumeSizeInGB": 30}}, "ValidationException", "at 'resourceConfig.instanceType' failed to satisfy constraint: Member must satisfy enum value set"),
        ({"RoleArn": "arn:aws:iam::123456789012:user/bob"}, "ValidationException", "at 'roleArn' failed to satisfy constraint"),
        ({"StoppingCondition": {}}, "ValidationException", "Value null at 'stoppingCondition.maxRuntimeInSeconds'"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 0}}, "ValidationException", "at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 1"),
        ({"RoleArn": None}, "ValidationException", "Value null at 'roleArn' failed to satisfy constraint: Member must not be null"),
        ({"AlgorithmSpecification": {"TrainingImage": "python:3.11", "TrainingInputMode": "File"}}, "ValidationException", "at 'algorithmSpecification.trainingImage' failed to satisfy constraint: Member must be an Amazon ECR image URI"),
        ({"OutputDataConfig": {"S3OutputPath": "s3://Bad_Bucket/x"}}, "ValidationException", "at 'outputDataConfig.s3OutputPath'"),
    ],
)
def test_sagemaker_create_training_job_validation(emulator, change, code, fragment):
    request = sagemaker_request("valid-name", BUCKET, "p", {"k": "v"}, **change)
    with pytest.raises(ClientError) as info:
        client(emulator.url, "sagemaker", validate=False).create_training_job(**request)
    assert info.value.response["Error"]["Code"] == code
    assert fragment in info.value.response["Error"]["Message"]


def test_emulator_binds_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        Emulator(host="0.0.0.0")


def test_unknown_jobs(clients):
    with pytest.raises(clients.braket.exceptions.ResourceNotFoundException):
        clients.braket.get_job(jobArn="arn:aws:braket:us-east-1:123456789012:job/no-such-job")
    with pytest.raises(clients.braket.exceptions.ValidationException):
        clients.braket.get_job(jobArn="not-an-arn")
    with pytest.raises(ClientError) as info:
        clients.sagemaker.describe_training_job(TrainingJobName="no-such-job")
    assert info.value.response["Error"] == {"Code": "ValidationException", "Message": "Requested resource not found."}


# --- lifecycles -----------------------------------------------------------------------------------------


def test_braket_job_completes(emulator, clients):
    name, prefix, arn = start_braket(clients, greet, 21)
    # Today's Braket job ARNs end in a UUID, not the job's name (the Braket SDK's _logs_prefix).
    assert re.fullmatch(r"arn:aws:braket:us-east-1:123456789012:job/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", arn), arn
    job, seen = braket_until_done(clients, arn)
    assert seen == ["QUEUED", "RUNNING", "COMPLETED"], job.get("failureReason")
    events = [e["eventType"] for e in job["events"]]
    assert events == ["QUEUED_FOR_EXECUTION", "STARTING_INSTANCE", "DOWNLOADING_DATA", "RUNNING",
                      "UPLOADING_RESULTS", "COMPLETED"]
    assert job["startedAt"] <= job["endedAt"] and job["billableDuration"] > 0

    result = read_result(clients.s3, BUCKET, f"{prefix}/output-data/output/model.tar.gz")
    assert result["ok"] and result["value"]["double"] == 42
    env = result["value"]["env"]
    # Every AMZN_BRAKET_* variable of the contract is set, but the checkpoint directory: this job
    # has no checkpointConfig (what AWS sets then is unconfirmed; braket_contract.container_environment).
    assert env.pop(byoc_entry.ENV_BRAKET_CHECKPOINT_DIR) is None and all(env.values()), env
    tree = Path(emulator.root) / name
    assert env[byoc_entry.ENV_BRAKET_JOB_RESULTS_DIR] == str(tree / "opt/braket/model")
    assert env[byoc_entry.ENV_ML_ROOT] == str(tree / "opt/ml")
    assert env[byoc_entry.ENV_BRAKET_DEVICE_ARN] == job["deviceConfig"]["device"]

    streams, messages = log_messages(clients.logs, "/aws/braket/jobs", name)
    assert len(streams) == 1 and streams[0].startswith(f"{name}/{arn.rsplit('/', 1)[1]}/algo-1-")
    assert "hello from the task, x=21" in messages and "a line on stderr" in messages


def test_sagemaker_job_completes(emulator, clients):
    name, prefix = start_sagemaker(clients, greet, 5)
    job, seen = sagemaker_until_done(clients, name)
    assert seen == [("InProgress", "Starting"), ("InProgress", "Downloading"), ("InProgress", "Training"),
                    ("InProgress", "Uploading"), ("Completed", "Completed")], job.get("FailureReason")
    transitions = job["SecondaryStatusTransitions"]
    assert [t["Status"] for t in transitions] == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t and t["StatusMessage"] for t in transitions)
    key = f"{prefix}/out/{name}/output/model.tar.gz"
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/{key}"
    result = read_result(clients.s3, BUCKET, key)
    assert result["ok"] and result["value"]["double"] == 10

    config = Path(emulator.root) / name / "opt/ml/input/config"
    assert json.loads((config / "hyperparameters.json").read_text()) == job["HyperParameters"]
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"
    assert "payload" in json.loads((config / "inputdataconfig.json").read_text())

    streams, messages = log_messages(clients.logs, "/aws/sagemaker/TrainingJobs", name)
    assert len(streams) == 1 and streams[0].startswith(f"{name}/algo-1-")
    assert "hello from the task, x=5" in messages


def test_task_that_raises_fails_both_services(clients):
    _, prefix_b, arn = start_braket(clients, explode)
    name_s, prefix_s = start_sagemaker(clients, explode)
    bjob, _ = braket_until_done(clients, arn)
    sjob, _ = sagemaker_until_done(clients, name_s)
    assert bjob["status"] == "FAILED" and bjob["events"][-1]["eventType"] == "FAILED"
    assert sjob["TrainingJobStatus"] == "Failed" and sjob["SecondaryStatus"] == "Failed"
    assert bjob["failureReason"] == "ValueError: the task exploded on purpose"
    # SageMaker wraps the failure file: "AlgorithmError: <file>, exit code: <n>" (sagemaker_contract.py).
    assert sjob["FailureReason"] == "AlgorithmError: ValueError: the task exploded on purpose, exit code: 1"
    # The results travel on failure too: the envelope holds the exception and its traceback.
    result = read_result(clients.s3, BUCKET, f"{prefix_b}/output-data/output/model.tar.gz")
    assert not result["ok"] and "the task exploded on purpose" in result["exception"]["traceback"]
    assert not read_result(clients.s3, BUCKET, f"{prefix_s}/out/{name_s}/output/model.tar.gz")["ok"]


def test_cancel_braket_job_mid_run(emulator, clients):
    name, _, arn = start_braket(clients, sleep_long)
    pid = job_pid(emulator, name)
    answer = clients.braket.cancel_job(jobArn=arn)
    assert answer["cancellationStatus"] == "CANCELLING"
    job, seen = braket_until_done(clients, arn)
    assert seen[-1] == "CANCELLED" and job["events"][-1]["eventType"] == "CANCELLED"
    assert "COMPLETED" not in seen and "FAILED" not in seen
    assert_process_gone(pid)
    with pytest.raises(clients.braket.exceptions.ConflictException):
        done_name, _, done_arn = start_braket(clients, greet, 1)
        braket_until_done(clients, done_arn)
        clients.braket.cancel_job(jobArn=done_arn)


def test_stop_sagemaker_job_mid_run(emulator, clients):
    name, _ = start_sagemaker(clients, sleep_long)
    pid = job_pid(emulator, name)
    clients.sagemaker.stop_training_job(TrainingJobName=name)
    job, seen = sagemaker_until_done(clients, name)
    assert seen[-1] == ("Stopped", "Stopped")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]][-2:] == ["Stopping", "Stopped"]
    assert "ModelArtifacts" in job  # SageMaker saves /opt/ml/model after a stop
    assert_process_gone(pid)
    with pytest.raises(ClientError) as info:
        clients.sagemaker.stop_training_job(TrainingJobName=name)
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_max_runtime_exceeded(emulator, clients):
    name_b, _, arn = start_braket(clients, sleep_long, stoppingCondition={"maxRuntimeInSeconds": 1})
    name_s, _ = start_sagemaker(clients, sleep_long, StoppingCondition={"MaxRuntimeInSeconds": 1})
    pids = [job_pid(emulator, name_b), job_pid(emulator, name_s)]
    bjob, _ = braket_until_done(clients, arn)
    sjob, _ = sagemaker_until_done(clients, name_s)
    assert bjob["status"] == "FAILED" and "maxRuntimeInSeconds" in bjob["failureReason"]
    assert [e["eventType"] for e in bjob["events"]][-2:] == ["MAX_RUNTIME_EXCEEDED", "FAILED"]
    assert (sjob["TrainingJobStatus"], sjob["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    for pid in pids:
        assert_process_gone(pid)


def test_admin_kill_fails_the_job_with_a_clear_reason(emulator, clients):
    name, _, arn = start_braket(clients, sleep_long)
    pid = job_pid(emulator, name)
    wait_until(lambda: logged(clients, "/aws/braket/jobs", name, "sleeping"))  # the task is running
    with urllib.request.urlopen(urllib.request.Request(f"{emulator.url}/_byoc/jobs/{name}/kill", method="POST"), timeout=10) as r:
        assert json.loads(r.read())["pid"] == pid
    job, _ = braket_until_done(clients, arn)
    assert job["status"] == "FAILED"
    assert job["failureReason"].startswith("AlgorithmError: the job's process exited with code -9 (killed by SIGKILL)")
    assert "sleeping" in job["failureReason"]  # the last log lines come along
    with urllib.request.urlopen(f"{emulator.url}/_byoc/jobs", timeout=10) as r:
        listed = {j["name"]: j for j in json.loads(r.read())}
    assert listed[name]["status"] == "FAILED" and listed[name]["service"] == "braket"


# --- idempotency, conflicts, listing ------------------------------------------------------------------


def test_client_token_is_idempotent_and_names_conflict(clients):
    name, prefix = unique("idem"), unique("prefix")
    hp = upload_payload(clients.s3, BUCKET, prefix, greet, 1)
    source = upload_source(clients.s3, BUCKET, prefix)
    request = braket_request(name, BUCKET, prefix, hp, source, clientToken="token-1")
    first = clients.braket.create_job(**request)["jobArn"]
    assert clients.braket.create_job(**request)["jobArn"] == first
    with pytest.raises(clients.braket.exceptions.ConflictException):
        clients.braket.create_job(**{**request, "clientToken": "token-2"})
    braket_until_done(clients, first)


def test_duplicate_training_job_name_is_resource_in_use(clients):
    name, prefix = start_sagemaker(clients, greet, 1)
    hp = upload_payload(clients.s3, BUCKET, prefix, greet, 1)
    with pytest.raises(ClientError) as info:
        clients.sagemaker.create_training_job(**sagemaker_request(name, BUCKET, prefix, hp))
    assert info.value.response["Error"]["Code"] == "ResourceInUse"
    sagemaker_until_done(clients, name)


def test_search_jobs_and_list_training_jobs(clients):
    _, _, arn = start_braket(clients, greet, 1)
    name_s, _ = start_sagemaker(clients, greet, 1)
    found = clients.braket.search_jobs(filters=[{"name": "jobArn", "operator": "EQUAL", "values": [arn]}])["jobs"]
    assert [j["jobArn"] for j in found] == [arn] and found[0]["device"]
    assert arn in [j["jobArn"] for j in clients.braket.search_jobs(filters=[])["jobs"]]
    recent = [{"name": "createdAt", "operator": "GTE", "values": [found[0]["createdAt"].isoformat()]}]
    assert arn in [j["jobArn"] for j in clients.braket.search_jobs(filters=recent)["jobs"]]
    with pytest.raises(clients.braket.exceptions.ValidationException):
        clients.braket.search_jobs(filters=[{"name": "colour", "operator": "EQUAL", "values": ["red"]}])
    listed = clients.sagemaker.list_training_jobs(NameContains=name_s)["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in listed] == [name_s]
    paginator = clients.sagemaker.get_paginator("list_training_jobs")
    every = [j["TrainingJobName"] for page in paginator.paginate(PaginationConfig={"PageSize": 2}) for j in page["TrainingJobSummaries"]]
    assert name_s in every and len(every) == len(set(every))
    braket_until_done(clients, arn)
    sagemaker_until_done(clients, name_s)


# --- the command --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_local_serves_and_stops_on_sigint(tmp_path):
    port = _free_port()
    script = Path(sys.executable).with_name("byoc-executor")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "byoc_executor.cli"]
    process = subprocess.Popen(command + ["local", "--port", str(port), "--root", str(tmp_path / "jobs")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.strip().endswith(f"http://127.0.0.1:{port}"), (line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        sm = client(f"http://127.0.0.1:{port}", "sagemaker")
        assert sm.list_training_jobs()["TrainingJobSummaries"] == []
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_connections_are_kept_alive_and_left_clean(emulator):
    """Several requests on one connection, like botocore's pool does with AWS: a body the server
    does not read (PUT to a missing bucket), a HEAD, an error, then a normal call, all answered."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(emulator.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"}
    try:
        connection.request("PUT", "/no-such-bucket-here/key", body=b"x" * 100_000, headers=auth)
        first = connection.getresponse()
        assert first.status == 404 and b"NoSuchBucket" in first.read()
        opened = connection.sock
        assert opened is not None  # http.client drops a socket the server said it would close
        connection.request("HEAD", "/no-such-bucket-here/key", headers=auth)
        second = connection.getresponse()
        assert second.status == 404 and second.read() == b""
        connection.request("GET", "/", headers=auth)
        third = connection.getresponse()
        assert third.status == 200 and b"ListAllMyBucketsResult" in third.read()
        assert third.getheader("Connection", "").lower() != "close"
        assert connection.sock is opened  # one TCP connection served all three
    finally:
        connection.close()


def test_describe_training_job_has_the_fields_the_service_returns(clients):
    """OutputDataConfig.KmsKeyId "" when unset, ResourceConfig in full, Debug/Profiler configs echoed,
    ProfilingStatus, ModelArtifacts (required in the model's DescribeTrainingJobResponse)."""
    debug = {"S3OutputPath": f"s3://{BUCKET}/debug", "CollectionConfigurations": []}
    profiler = {"S3OutputPath": f"s3://{BUCKET}/profiler", "ProfilingIntervalInMilliseconds": 500}
    name, prefix = start_sagemaker(clients, greet, 1, DebugHookConfig=debug, ProfilerConfig=profiler)
    job = clients.sagemaker.describe_training_job(TrainingJobName=name)
    assert job["OutputDataConfig"]["KmsKeyId"] == ""
    assert job["ResourceConfig"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30, "KeepAlivePeriodInSeconds": 0}
    assert job["DebugHookConfig"] == debug and job["ProfilerConfig"] == profiler and job["ProfilingStatus"] == "Enabled"
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/{prefix}/out/{name}/output/model.tar.gz"
    done, _ = sagemaker_until_done(clients, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")


def test_training_jobs_are_per_region(emulator, clients):
    """A us-west-2 client does not see us-east-1's jobs, and may reuse their names (names are per region)."""
    import boto3

    name, prefix = start_sagemaker(clients, greet, 1)
    west = boto3.client("sagemaker", endpoint_url=emulator.url, region_name="us-west-2", aws_access_key_id="t", aws_secret_access_key="t")
    with pytest.raises(ClientError) as info:
        west.describe_training_job(TrainingJobName=name)
    assert info.value.response["Error"]["Message"] == "Requested resource not found."
    assert name not in [j["TrainingJobName"] for j in west.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]]
    hp = upload_payload(clients.s3, BUCKET, prefix + "-w", greet, 2)
    arn = west.create_training_job(**sagemaker_request(name, BUCKET, prefix + "-w", hp))["TrainingJobArn"]
    assert arn == f"arn:aws:sagemaker:us-west-2:123456789012:training-job/{name}"
    for client_ in (clients.sagemaker, west):
        done = poll(lambda: client_.describe_training_job(TrainingJobName=name), lambda r: r["TrainingJobStatus"],
                    lambda r: r["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"), 30)[0]
        assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
