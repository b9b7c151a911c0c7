"""The emulator as plain boto3 sees it, with nothing of byoc's: wire format, devices, regions, validation.

Every client here is boto3 with its own waiters and paginators; no payload, hyperparameter or
name of byoc-executor's is used.
"""

from __future__ import annotations

import io
import sys
import tarfile
import uuid

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError, WaiterError

from byoc_executor.local import Emulator
from byoc_executor.local.launchers import ProcessLauncher

pytestmark = pytest.mark.timeout(120)

BUCKET = "wire-tests"
ROLE = "arn:aws:iam::123456789012:role/outside"
AWS_IMAGE = "292282985366.dkr.ecr.us-east-1.amazonaws.com/amazon-braket-base-jobs:1.0-cpu-py311-ubuntu22.04"
OTHER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/someone-elses-image:1"
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with Emulator(root=tmp_path_factory.mktemp("wire"), phase_delay=0.05, kill_grace=1.0) as em:
        aws(em, "s3").create_bucket(Bucket=BUCKET)
        yield em


def aws(emulator: Emulator, service: str, region: str = "us-east-1", retries: int = 3):
    return boto3.client(
        service, endpoint_url=emulator.url, region_name=region, aws_access_key_id="outside", aws_secret_access_key="outside",
        config=botocore.config.Config(retries={"max_attempts": retries, "mode": "standard"}),
    )


def script(emulator: Emulator, body: str) -> str:
    """Upload a one-module source archive (``job.py``); returns its S3 URI."""
    data = body.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("job.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    key = f"src/{uuid.uuid4().hex}/source.tar.gz"
    aws(emulator, "s3").put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
    return f"s3://{BUCKET}/{key}"


def braket_job(uri: str, **overrides) -> dict:
    name = f"w-{uuid.uuid4().hex[:10]}"
    request = {
        "clientToken": str(uuid.uuid4()),
        "jobName": name,
        "roleArn": ROLE,
        "algorithmSpecification": {"containerImage": {"uri": AWS_IMAGE}, "scriptModeConfig": {"entryPoint": "job:main", "s3Uri": uri, "compressionType": "GZIP"}},
        "outputDataConfig": {"s3Path": f"s3://{BUCKET}/jobs/{name}/data"},
        "instanceConfig": {"instanceType": "ml.m5.large", "volumeSizeInGb": 30, "instanceCount": 1},
        "deviceConfig": {"device": SV1},
        "hyperParameters": {"greeting": "hi"},
    }
    request.update(overrides)
    return request


def test_every_answer_has_a_request_id(emulator):
    for client, call in ((aws(emulator, "braket"), lambda c: c.search_jobs(filters=[])),
                         (aws(emulator, "sagemaker"), lambda c: c.list_training_jobs()),
                         (aws(emulator, "sts"), lambda c: c.get_caller_identity())):
        assert call(client)["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as info:
        aws(emulator, "braket").get_job(jobArn="arn:aws:braket:us-east-1:123456789012:job/nope")
    assert info.value.response["ResponseMetadata"]["RequestId"]
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_operations_not_implemented_answer_aws_shaped_errors(emulator):
    """Never a plain-text 500: a ClientError with a code (not botocore's ResponseParserError), not retried."""
    with pytest.raises(ClientError) as info:
        aws(emulator, "sagemaker").add_association(
            SourceArn="arn:aws:sagemaker:us-east-1:123456789012:experiment/a", DestinationArn="arn:aws:sagemaker:us-east-1:123456789012:experiment/b")
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    with pytest.raises(ClientError) as info:
        aws(emulator, "braket").tag_resource(resourceArn="arn:aws:braket:us-east-1:123456789012:job/x", tags={"a": "b"})
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"


def test_devices(emulator):
    braket = aws(emulator, "braket")
    for arn, name in ((SV1, "SV1"), ("arn:aws:braket:::device/quantum-simulator/amazon/dm1", "dm1"),
                      ("arn:aws:braket:::device/quantum-simulator/amazon/tn1", "TN1")):
        device = braket.get_device(deviceArn=arn)
        assert (device["deviceName"], device["deviceType"], device["deviceStatus"]) == (name, "SIMULATOR", "ONLINE")
        assert {q["queue"] for q in device["deviceQueueInfo"]} == {"QUANTUM_TASKS_QUEUE", "JOBS_QUEUE"}
    # The simulators' capability documents are what the Braket SDK's schema accepts.
    from braket.device_schema.simulators import GateModelSimulatorDeviceCapabilities

    GateModelSimulatorDeviceCapabilities.parse_raw(braket.get_device(deviceArn=SV1)["deviceCapabilities"])
    # A QPU exists in its own region only.
    forte = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"
    assert braket.get_device(deviceArn=forte)["deviceType"] == "QPU"
    with pytest.raises(ClientError) as info:
        aws(emulator, "braket", "eu-north-1").get_device(deviceArn=forte)
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    pages = braket.get_paginator("search_devices").paginate(filters=[], PaginationConfig={"PageSize": 2})
    found = [d["deviceArn"] for page in pages for d in page["devices"]]
    assert SV1 in found and forte in found and len(found) == len(set(found))
    only = braket.search_devices(filters=[{"name": "deviceArn", "values": [SV1]}])["devices"]
    assert [d["deviceArn"] for d in only] == [SV1]


def test_script_mode_job_runs_and_is_seen_from_its_region_only(emulator):
    uri = script(emulator, "import os\ndef main(greeting):\n    print('greeting', greeting, os.environ['AMZN_BRAKET_JOB_NAME'])\n")
    braket = aws(emulator, "braket")
    request = braket_job(uri, tags={"team": "outside"})
    arn = braket.create_job(**request)["jobArn"]
    queued = braket.get_job(jobArn=arn, additionalAttributeNames=["QueueInfo"])
    assert queued["queueInfo"]["queue"] == "JOBS_QUEUE" and queued["queueInfo"]["position"]
    assert braket.create_job(**request)["jobArn"] == arn  # the same token and request: the same job
    with pytest.raises(ClientError) as info:
        braket.create_job(**{**request, "hyperParameters": {"greeting": "other"}})  # the same token, another request
    assert info.value.response["Error"]["Code"] == "ConflictException"
    assert braket.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "outside"}
    west = aws(emulator, "braket", "us-west-2")
    with pytest.raises(ClientError) as info:
        west.get_job(jobArn=arn)
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert arn not in [j["jobArn"] for j in west.search_jobs(filters=[])["jobs"]]
    for _ in range(300):
        job = braket.get_job(jobArn=arn, additionalAttributeNames=["QueueInfo"])
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            break
        __import__("time").sleep(0.1)
    assert job["status"] == "COMPLETED", job.get("failureReason")
    assert job["queueInfo"]["position"] == "None" and "COMPLETED" in job["queueInfo"]["message"]
    stream_prefix = f"{request['jobName']}/{arn.rsplit('/', 1)[1]}/"
    logs = aws(emulator, "logs")
    streams = logs.describe_log_streams(logGroupName="/aws/braket/jobs", logStreamNamePrefix=stream_prefix)["logStreams"]
    events = logs.get_log_events(logGroupName="/aws/braket/jobs", logStreamName=streams[0]["logStreamName"], startFromHead=True)["events"]
    assert any(e["message"] == f"greeting hi {request['jobName']}" for e in events)


def test_script_mode_failure_is_the_exception(emulator):
    uri = script(emulator, "def main():\n    raise KeyError('no such thing')\n")
    braket = aws(emulator, "braket")
    arn = braket.create_job(**braket_job(uri, hyperParameters={}))["jobArn"]
    for _ in range(300):
        job = braket.get_job(jobArn=arn)
        if job["status"] in ("COMPLETED", "FAILED"):
            break
        __import__("time").sleep(0.1)
    assert job["status"] == "FAILED" and job["failureReason"] == "KeyError: 'no such thing'"


def test_braket_validation(emulator):
    braket, uri = aws(emulator, "braket"), script(emulator, "def main():\n    pass\n")

    def refused(**overrides) -> str:
        with pytest.raises(ClientError) as info:
            braket.create_job(**braket_job(uri, **overrides))
        assert info.value.response["Error"]["Code"] == "ValidationException", info.value
        return info.value.response["Error"]["Message"]

    assert "less than or equal to 5" in refused(instanceConfig={"instanceType": "ml.m5.large", "volumeSizeInGb": 30, "instanceCount": 6})
    assert "does not exist" in refused(deviceConfig={"device": "arn:aws:braket:::device/quantum-simulator/amazon/sv9"})
    assert "does not exist" in refused(deviceConfig={"device": "arn:aws:braket:eu-north-1::device/qpu/ionq/Forte-1"})
    message = refused(algorithmSpecification={"containerImage": {"uri": AWS_IMAGE}})
    assert "scriptModeConfig" in message and "Local mode runs" in message
    message = refused(algorithmSpecification={"containerImage": {"uri": OTHER_IMAGE}, "scriptModeConfig": {"entryPoint": "job:main", "s3Uri": uri}})
    assert "Local mode cannot run this job" in message
    # https:// S3 URLs are S3 paths to the model.
    https = uri.replace(f"s3://{BUCKET}/", f"https://{BUCKET}.s3.us-east-1.amazonaws.com/")
    arn = braket.create_job(**braket_job(https, hyperParameters={}))["jobArn"]
    assert braket.cancel_job(jobArn=arn)["cancellationStatus"] in ("CANCELLING", "CANCELLED")


def test_quantum_tasks_search_and_cancel(emulator):
    braket = aws(emulator, "braket")
    arn = braket.create_quantum_task(
        clientToken=str(uuid.uuid4()), deviceArn=SV1, shots=10, outputS3Bucket=BUCKET, outputS3KeyPrefix="tasks",
        action='{"braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"}, "source": "OPENQASM 3;"}',
        tags={"k": "v"},
    )["quantumTaskArn"]
    found = braket.search_quantum_tasks(filters=[{"name": "deviceArn", "operator": "EQUAL", "values": [SV1]}])["quantumTasks"]
    assert arn in [t["quantumTaskArn"] for t in found]
    assert braket.list_tags_for_resource(resourceArn=arn)["tags"] == {"k": "v"}
    assert braket.cancel_quantum_task(quantumTaskArn=arn)["quantumTaskArn"] == arn
    assert aws(emulator, "braket", "us-west-2").search_quantum_tasks(filters=[])["quantumTasks"] == []
    with pytest.raises(ClientError):
        braket.create_quantum_task(clientToken="x", deviceArn="local:braket/braket_sv", shots=1, outputS3Bucket=BUCKET,
                                   outputS3KeyPrefix="t", action="{}")


def test_sagemaker_refuses_at_creation_what_process_mode_cannot_run(emulator):
    sagemaker = aws(emulator, "sagemaker")
    name = f"w-{uuid.uuid4().hex[:10]}"
    with pytest.raises(ClientError) as info:
        sagemaker.create_training_job(
            TrainingJobName=name, RoleArn=ROLE, AlgorithmSpecification={"TrainingImage": OTHER_IMAGE, "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": f"https://{BUCKET}.s3.amazonaws.com/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            StoppingCondition={"MaxRuntimeInSeconds": 60},
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "Local mode runs SageMaker training jobs" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        sagemaker.describe_training_job(TrainingJobName=name)
    assert info.value.response["Error"] == {"Code": "ValidationException", "Message": "Requested resource not found."}
    # boto3's own waiter sees the not-found as the failure it is.
    with pytest.raises(WaiterError):
        sagemaker.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    assert list(sagemaker.get_paginator("list_training_jobs").paginate(NameContains=name))[0]["TrainingJobSummaries"] == []


def test_a_plain_text_500_becomes_an_aws_shaped_error():
    """What crashed the SageMaker SDK v3 (ResponseParserError on a plain-text 500) cannot reach a client."""
    import json

    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    from byoc_executor.local import wire

    def broken(environ, start_response):
        return Response("Internal Server Error", status=500, content_type="text/plain")(environ, start_response)

    answer = Client(wire.conform(broken, "sagemaker")).post("/")
    assert answer.status_code == 500 and answer.headers["x-amzn-RequestId"]
    assert json.loads(answer.get_data())["__type"] == "InternalFailure"
    answer = Client(wire.conform(broken, "braket")).get("/job/x")
    assert answer.headers["x-amzn-ErrorType"] == "InternalFailure"


# --- ResourceConfig.VolumeKmsKeyId (the model's documentation: no key with local storage; key id or ARN only) ---

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def training_job(instance_type: str, volume_key: str) -> dict:
    return dict(
        TrainingJobName=f"w-{uuid.uuid4().hex[:10]}", RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": OTHER_IMAGE, "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out", "KmsKeyId": "alias/outputs"},  # an alias is fine here
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 10, "VolumeKmsKeyId": volume_key},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )


@pytest.mark.parametrize(
    ("instance_type", "volume_key", "why"),
    [
        ("ml.g5.xlarge", KEY_ARN, "ml.g5.xlarge has local instance storage"),  # NVMe: the instance's hardware encrypts it
        ("ml.r5d.large", "1234abcd-12ab-34cd-56ef-1234567890ab", "ml.r5d.large has local instance storage"),  # the d letter
        ("ml.m5.large", "alias/volumes", "a KMS key id or a KMS key ARN"),
        ("ml.m5.large", "arn:aws:kms:us-east-1:123456789012:alias/volumes", "a KMS key id or a KMS key ARN"),
    ],
)
def test_sagemaker_refuses_a_volume_key_the_model_documents_as_refused(emulator, instance_type: str, volume_key: str, why: str):
    sagemaker = aws(emulator, "sagemaker")
    request = training_job(instance_type, volume_key)
    with pytest.raises(ClientError) as info:
        sagemaker.create_training_job(**request)
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "resourceConfig.volumeKmsKeyId" in error["Message"] and why in error["Message"], error["Message"]
    assert "Local mode cannot run" not in error["Message"]  # refused for the key, before the image is considered
    assert sagemaker.list_training_jobs(NameContains=request["TrainingJobName"])["TrainingJobSummaries"] == []


class ExitsZero(ProcessLauncher):
    """An image whose ``train`` exits 0 at once: any training job runs, as a plain process."""

    train_command = [sys.executable, "-c", "pass"]


def test_sagemaker_accepts_a_key_arn_for_an_instance_type_without_local_storage(tmp_path):
    with Emulator(root=tmp_path, launcher=ExitsZero(), phase_delay=0.05, kill_grace=1.0) as em:
        aws(em, "s3").create_bucket(Bucket=BUCKET)
        sagemaker = aws(em, "sagemaker")
        for key in (KEY_ARN, "1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab"):
            request = training_job("ml.m5.large", key)
            sagemaker.create_training_job(**request)
            sagemaker.get_waiter("training_job_completed_or_stopped").wait(
                TrainingJobName=request["TrainingJobName"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
            job = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
            assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
            assert job["ResourceConfig"]["VolumeKmsKeyId"] == key
