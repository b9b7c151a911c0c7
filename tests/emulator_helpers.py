"""Helpers for tests against the local emulator: payloads, request dicts, polling, tasks.

The task functions here are pickled by value (``cloudpickle.register_pickle_by_value``), so a
job process can run them without importing this module.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import json
import tarfile
import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable

import boto3
import botocore.config
import cloudpickle
from werkzeug.wrappers import Response

from byoc_executor.container import byoc_entry

REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:latest"
ROLE = "arn:aws:iam::123456789012:role/byoc-job"
DEVICE = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --- tasks (run inside the job process) -------------------------------------------------------------


def greet(x: int) -> dict:
    print(f"hello from the task, x={x}")
    print("a line on stderr", file=sys.stderr)
    names = [v for k, v in vars(byoc_entry).items() if k.startswith("ENV_BRAKET_")] + [byoc_entry.ENV_ML_ROOT]
    return {"double": 2 * x, "env": {n: os.environ.get(n) for n in names}, "cwd": os.getcwd()}


def explode() -> None:
    print("about to fail")
    raise ValueError("the task exploded on purpose")


def sleep_long(seconds: float = 60.0) -> None:
    print("sleeping", flush=True)
    time.sleep(seconds)


def checkpoint_counter(wait_first: float = 0.0) -> dict:
    """Read the count the previous run left in $BYOC_CHECKPOINT_DIR, write it plus one.

    With ``wait_first``, a run that found no checkpoint sleeps that long after writing its own
    (long enough to be interrupted).
    """
    directory = os.environ[byoc_entry.ENV_TASK_CHECKPOINT_DIR]
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "count.txt")
    seen = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(seen + 1))
    print(f"checkpoint: found {seen}, wrote {seen + 1}", flush=True)
    if wait_first and seen == 0:
        time.sleep(wait_first)
    return {"seen": seen, "dir": directory}


def checkpoint_then_fail() -> None:
    """Write a checkpoint, then fail."""
    with open(os.path.join(os.environ[byoc_entry.ENV_TASK_CHECKPOINT_DIR], "partial.txt"), "w") as f:
        f.write("half done")
    raise RuntimeError("failed after checkpointing")


def fail_on(host: str) -> str:
    """Fail on ``host``, succeed elsewhere."""
    current = os.environ.get(byoc_entry.ENV_TASK_CURRENT_HOST)
    if current == host:
        raise ValueError(f"failing on {current} on purpose")
    return current


def where_am_i() -> dict:
    """The host the task runs on, and what it can reach."""
    host = os.environ.get(byoc_entry.ENV_TASK_CURRENT_HOST)
    print(f"the task ran on {host}", flush=True)
    names = (byoc_entry.ENV_TASK_HOSTS, byoc_entry.ENV_TASK_CURRENT_HOST, "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "BYOC_TEST_FLAG")
    return {n: os.environ.get(n) for n in names}


def create_quantum_task(bucket: str) -> str:
    """Create a quantum task with the job's token, as a hybrid job's code does."""
    import json

    braket = boto3.client("braket")
    action = {"braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"}, "source": "OPENQASM 3; qubit q; h q;"}
    answer = braket.create_quantum_task(
        clientToken=str(uuid.uuid4()), deviceArn=DEVICE, shots=10, outputS3Bucket=bucket,
        outputS3KeyPrefix="tasks", action=json.dumps(action), deviceParameters="{}",
        jobToken=os.environ[byoc_entry.ENV_BRAKET_JOB_TOKEN],
    )
    return answer["quantumTaskArn"]


# --- clients and data -----------------------------------------------------------------------------------


def client(url: str, service: str, validate: bool = True) -> Any:
    """A plain boto3 client to the emulator with explicit dummy credentials.

    ``validate=False`` turns off botocore's own parameter checks, so that the emulator's are
    what refuses a bad request (as AWS does for other SDKs and raw HTTP).
    """
    return boto3.client(
        service, endpoint_url=url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing",
        config=botocore.config.Config(parameter_validation=validate),
    )


class EmulatorClients:
    """One plain boto3 client per service the tests use, all pointed at the emulator."""

    def __init__(self, url: str):
        self.s3 = client(url, "s3")
        self.braket = client(url, "braket")
        self.sagemaker = client(url, "sagemaker")
        self.logs = client(url, "logs")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def upload_payload(s3: Any, bucket: str, prefix: str, function: Callable, *args: Any) -> dict[str, str]:
    """Upload a task envelope to ``s3://bucket/prefix/payload/`` and return the hyperparameters."""
    from byoc_executor.codec import encode_task

    encoded = encode_task(function, list(args), {})
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{byoc_entry.PAYLOAD_CHANNEL}/{byoc_entry.PAYLOAD_FILE}", Body=encoded.envelope_bytes())
    return encoded.hyperparameters()


def source_archive() -> bytes:
    """The Braket source archive the executor uploads (byoc_entry.py at its root)."""
    from byoc_executor.byoc import _source_archive

    return _source_archive()


def upload_source(s3: Any, bucket: str, prefix: str) -> str:
    """Upload the Braket source archive; returns its S3 URI."""
    key = f"{prefix}/{byoc_entry.SOURCE_ARCHIVE}"
    s3.put_object(Bucket=bucket, Key=key, Body=source_archive())
    return f"s3://{bucket}/{key}"


def braket_request(name: str, bucket: str, prefix: str, hp: dict, source_uri: str, **overrides: Any) -> dict:
    request = {
        "jobName": name,
        "roleArn": ROLE,
        "algorithmSpecification": {
            "containerImage": {"uri": IMAGE},
            "scriptModeConfig": {"entryPoint": byoc_entry.BRAKET_ENTRY_POINT, "s3Uri": source_uri, "compressionType": "GZIP"},
        },
        "inputDataConfig": [
            {"channelName": byoc_entry.PAYLOAD_CHANNEL,
             "dataSource": {"s3DataSource": {"s3Uri": f"s3://{bucket}/{prefix}/{byoc_entry.PAYLOAD_CHANNEL}/"}}}
        ],
        "outputDataConfig": {"s3Path": f"s3://{bucket}/{prefix}/output-data"},
        "instanceConfig": {"instanceType": "ml.m5.large", "volumeSizeInGb": 30, "instanceCount": 1},
        "deviceConfig": {"device": DEVICE},
        "hyperParameters": {byoc_entry.HP_SOURCE_SHA256: hashlib.sha256(source_archive()).hexdigest(), **hp},
        "stoppingCondition": {"maxRuntimeInSeconds": 600},
    }
    request.update(overrides)
    return request


def sagemaker_request(name: str, bucket: str, prefix: str, hp: dict, **overrides: Any) -> dict:
    request = {
        "TrainingJobName": name,
        "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": hp,
        "InputDataConfig": [
            {"ChannelName": byoc_entry.PAYLOAD_CHANNEL,
             "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                              "S3Uri": f"s3://{bucket}/{prefix}/{byoc_entry.PAYLOAD_CHANNEL}/"}}}
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{prefix}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "Environment": {"BYOC_TEST_FLAG": "on"},
    }
    request.update(overrides)
    return request


# --- polling --------------------------------------------------------------------------------------------


def poll(describe: Callable[[], dict], state: Callable[[dict], Any], done: Callable[[dict], bool],
         timeout: float = 30.0) -> tuple[dict, list]:
    """Call ``describe`` until ``done``; return the last answer and the distinct states seen, in order."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while True:
        answer = describe()
        current = state(answer)
        if not seen or seen[-1] != current:
            seen.append(current)
        if done(answer):
            return answer, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"still not done after {timeout}s; states seen: {seen}")
        time.sleep(0.03)


def read_result(s3: Any, bucket: str, key: str) -> dict:
    """Download model.tar.gz and unpickle the verified result envelope inside it."""
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert byoc_entry.RESULT_FILE in names, names
        envelope = tar.extractfile(byoc_entry.RESULT_FILE).read()  # type: ignore[union-attr]
    _, body = byoc_entry.read_envelope(io.BytesIO(envelope), "result")
    return cloudpickle.loads(body)


def log_messages(logs: Any, group: str, job_name: str) -> tuple[list[str], list[str]]:
    """(stream names, messages) of the job's streams in ``group``."""
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{job_name}/")["logStreams"]
    names = [s["logStreamName"] for s in streams]
    messages: list[str] = []
    for name in names:
        events = logs.get_log_events(logGroupName=group, logStreamName=name, startFromHead=True)["events"]
        messages += [e["message"] for e in events]
    return names, messages


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.03)


# --- what clients asked of the job APIs (request hooks) -------------------------------------------------

CREATE = {"braket": "CreateJob", "sagemaker": "CreateTrainingJob"}
DESCRIBE = {"braket": "GetJob", "sagemaker": "DescribeTrainingJob"}
STOP = {"braket": "CancelJob", "sagemaker": "StopTrainingJob"}


def not_found(service: str) -> Response:
    """What each API answers for a job that does not exist (botocore models: Braket's
    ResourceNotFoundException is a 404; SageMaker answers DescribeTrainingJob with a ValidationException)."""
    if service == "braket":
        response = Response(json.dumps({"message": "Job not found."}), status=404, content_type="application/json")
        response.headers["x-amzn-ErrorType"] = "ResourceNotFoundException"
        return response
    body = {"__type": "ValidationException", "message": "Requested resource not found."}
    return Response(json.dumps(body), status=400, content_type="application/x-amz-json-1.1")


def job_of(call: Any) -> str:
    """The job a job-API request is about: a Braket job's ARN (from the path), else the name in the body."""
    if call.service == "braket" and call.operation in ("GetJob", "CancelJob"):
        return urllib.parse.unquote(call.request.path.removeprefix("/job/").removesuffix("/cancel"))
    if call.operation in (*CREATE.values(), "DescribeTrainingJob", "StopTrainingJob"):
        data = call.request.get_data(cache=True)
        call.request.environ["wsgi.input"] = io.BytesIO(data)  # the service reads the body again
        body = json.loads(data or b"{}")
        return body.get("jobName") or body.get("TrainingJobName") or ""
    return ""


class Calls:
    """A request hook that records (service, operation, job name or ARN, time) and answers nothing."""

    def __init__(self, emulator: Any):
        self.seen: list[tuple[str, str, str, float]] = []
        self._emulator = emulator
        self._lock = threading.Lock()

    def __call__(self, call: Any) -> None:
        with self._lock:
            self.seen.append((call.service, call.operation, job_of(call), time.monotonic()))
        return None

    def __enter__(self) -> "Calls":
        self._emulator.request_hooks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._emulator.request_hooks.remove(self)

    def of(self, operation: str, job: str | None = None) -> list[float]:
        """When ``operation`` was asked (of ``job``, if given)."""
        with self._lock:
            return [at for _, op, name, at in self.seen if op == operation and (job is None or name == job)]

    def count(self, operation: str) -> int:
        return len(self.of(operation))
