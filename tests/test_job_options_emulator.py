"""Job options in the emulator, with plain boto3 requests: read-back, checkpoints, warm pools,
spot (billing and interruption), several instances, quantum tasks with the job token, and
network isolation.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from byoc_executor.container import byoc_entry
from byoc_executor.local import Emulator

from tests.emulator_helpers import (
    EmulatorClients,
        checkpoint_counter, checkpoint_then_fail, client, create_quantum_task, fail_on, log_messages, poll, read_result, unique, upload_payload,
        upload_source, wait_until, where_am_i, braket_request, sagemaker_request,
    )

BUCKET = "options"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
RESERVATION = "arn:aws:braket:us-east-1:123456789012:reservation/a1b2c3d4-0000-1111-2222-333344445555"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory):
    with Emulator(root=tmp_path_factory.mktemp("jobs"), phase_delay=0.3, kill_grace=1.0) as em:
        client(em.url, "s3").create_bucket(Bucket=BUCKET)
        yield em


@pytest.fixture
def clients(emulator: Emulator) -> EmulatorClients:
    return EmulatorClients(emulator.url)


def start_sagemaker(clients, function, *args, name: str | None = None, **overrides) -> tuple[str, str]:
    name, prefix = name or unique("sm"), unique("prefix")
    hp = upload_payload(clients.s3, BUCKET, prefix, function, *args)
    hp.update(overrides.pop("extra_hp", {}))
    if "CheckpointConfig" in overrides:  # as the client marks it (byoc_entry.HP_CHECKPOINTS)
        hp[byoc_entry.HP_CHECKPOINTS] = "true"
    clients.sagemaker.create_training_job(**sagemaker_request(name, BUCKET, prefix, hp, **overrides))
    return name, prefix


def start_braket(clients, function, *args, **overrides) -> tuple[str, str, str]:
    name, prefix = unique("bk"), unique("prefix")
    hp = upload_payload(clients.s3, BUCKET, prefix, function, *args)
    hp.update(overrides.pop("extra_hp", {}))
    if "checkpointConfig" in overrides:  # as the client marks it (byoc_entry.HP_CHECKPOINTS)
        hp[byoc_entry.HP_CHECKPOINTS] = "true"
    source = upload_source(clients.s3, BUCKET, prefix)
    arn = clients.braket.create_job(**braket_request(name, BUCKET, prefix, hp, source, **overrides))["jobArn"]
    return name, prefix, arn


def wait_sagemaker(clients, name: str, timeout: float = 60.0) -> tuple[dict, list]:
    return poll(lambda: clients.sagemaker.describe_training_job(TrainingJobName=name), lambda j: j["SecondaryStatus"],
                lambda j: j["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"), timeout)


def wait_braket(clients, arn: str, timeout: float = 60.0) -> tuple[dict, list]:
    return poll(lambda: clients.braket.get_job(jobArn=arn), lambda j: j["status"],
                lambda j: j["status"] in ("COMPLETED", "FAILED", "CANCELLED"), timeout)


def result_of(clients, uri: str) -> dict:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return read_result(clients.s3, bucket, key)


def archive_names(clients, uri: str) -> list[str]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        return tar.getnames()


# --- 1. read-back -------------------------------------------------------------------------------------


def test_sagemaker_reads_back_every_option_and_lists_its_tags(clients) -> None:
    name, _ = start_sagemaker(
        clients, where_am_i,
        EnableManagedSpotTraining=True,
        StoppingCondition={"MaxRuntimeInSeconds": 300, "MaxWaitTimeInSeconds": 600},
        CheckpointConfig={"S3Uri": f"s3://{BUCKET}/ckpt/readback", "LocalPath": "/opt/ml/checkpoints"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30, "VolumeKmsKeyId": KMS},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/readback/out", "KmsKeyId": KMS},
        VpcConfig={"Subnets": ["subnet-0abc1234"], "SecurityGroupIds": ["sg-0abc1234"]},
        EnableInterContainerTrafficEncryption=True,
        Tags=[{"Key": "team", "Value": "quantum"}],
    )
    job, _ = wait_sagemaker(clients, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 300, "MaxWaitTimeInSeconds": 600}
    assert job["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/ckpt/readback", "LocalPath": "/opt/ml/checkpoints"}
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == KMS and job["OutputDataConfig"]["KmsKeyId"] == KMS
    assert job["VpcConfig"] == {"Subnets": ["subnet-0abc1234"], "SecurityGroupIds": ["sg-0abc1234"]}
    assert job["EnableInterContainerTrafficEncryption"] is True and job["EnableNetworkIsolation"] is False
    assert "Tags" not in job  # DescribeTrainingJob has no Tags; ListTags has them
    assert clients.sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"] == [{"Key": "team", "Value": "quantum"}]
    # Spot: billed for less than it trained.
    assert 1 <= job["BillableTimeInSeconds"] <= job["TrainingTimeInSeconds"]
    assert "WarmPoolStatus" not in job


def test_sagemaker_list_tags_of_an_unknown_training_job(clients) -> None:
    with pytest.raises(ClientError) as e:
        clients.sagemaker.list_tags(ResourceArn="arn:aws:sagemaker:us-east-1:123456789012:training-job/nope")
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_spot_max_wait_rules(clients) -> None:
    with pytest.raises(ClientError) as e:
        start_sagemaker(clients, where_am_i, EnableManagedSpotTraining=True,
                        StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 300})
    assert "greater than or equal to MaxRuntimeInSeconds" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        start_sagemaker(clients, where_am_i, StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900})
    assert e.value.response["Error"]["Message"] == (
        "Invalid MaxWaitTimeInSeconds. It is only supported when EnableManagedSpotTraining is set to true"
    )


def test_braket_reads_back_every_option(clients) -> None:
    name, prefix, arn = start_braket(
        clients, where_am_i,
        checkpointConfig={"s3Uri": f"s3://{BUCKET}/ckpt/braket-readback"},
        tags={"team": "quantum"},
        associations=[{"arn": RESERVATION, "type": "RESERVATION_TIME_WINDOW_ARN"}],
    )
    job, _ = wait_braket(clients, arn)
    assert job["status"] == "COMPLETED", job.get("failureReason")
    assert job["checkpointConfig"] == {"s3Uri": f"s3://{BUCKET}/ckpt/braket-readback"}
    assert job["tags"] == {"team": "quantum"}
    assert job["associations"] == [{"arn": RESERVATION, "type": "RESERVATION_TIME_WINDOW_ARN"}]
    request = braket_request(name, BUCKET, prefix, {}, "s3://x/y")
    name2, _, arn2 = start_braket(clients, where_am_i, outputDataConfig={**request["outputDataConfig"], "kmsKeyId": KMS})
    assert clients.braket.get_job(jobArn=arn2)["outputDataConfig"]["kmsKeyId"] == KMS


# --- 2. checkpoints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["sagemaker", "braket"])
def test_a_job_finds_the_checkpoint_the_previous_one_left(clients, service: str) -> None:
    uri = f"s3://{BUCKET}/ckpt/{unique(service)}"
    seen = []
    for _ in range(2):
        if service == "sagemaker":
            name, _ = start_sagemaker(clients, checkpoint_counter, CheckpointConfig={"S3Uri": uri})
            job, _ = wait_sagemaker(clients, name)
            assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
            value = result_of(clients, job["ModelArtifacts"]["S3ModelArtifacts"])["value"]
            assert value["dir"].endswith("opt/ml/checkpoints")
        else:
            _, _, arn = start_braket(clients, checkpoint_counter, checkpointConfig={"s3Uri": uri})
            job, _ = wait_braket(clients, arn)
            assert job["status"] == "COMPLETED", job.get("failureReason")
            value = result_of(clients, job["outputDataConfig"]["s3Path"] + "/output/model.tar.gz")["value"]
            assert value["dir"].endswith("opt/braket/checkpoints")  # the API's default localPath
        seen.append(value["seen"])
    assert seen == [0, 1]
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    assert clients.s3.get_object(Bucket=bucket, Key=f"{key}/count.txt")["Body"].read() == b"2"


def test_checkpoints_are_uploaded_when_the_task_fails_too(clients) -> None:
    uri = f"s3://{BUCKET}/ckpt/{unique('failing')}"
    name, _ = start_sagemaker(clients, checkpoint_then_fail, CheckpointConfig={"S3Uri": uri})
    job, _ = wait_sagemaker(clients, name)
    assert job["TrainingJobStatus"] == "Failed" and "failed after checkpointing" in job["FailureReason"]
    key = uri.split("/", 3)[3]
    assert clients.s3.get_object(Bucket=BUCKET, Key=f"{key}/partial.txt")["Body"].read() == b"half done"


# --- 3. warm pools -------------------------------------------------------------------------------------------


def test_a_matching_job_reuses_the_warm_pool_and_skips_the_start(clients) -> None:
    resources = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 31, "KeepAlivePeriodInSeconds": 60}
    first, _ = start_sagemaker(clients, where_am_i, ResourceConfig=resources)
    job, _ = wait_sagemaker(clients, first)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    pool = job["WarmPoolStatus"]
    assert pool["Status"] == "Available" and pool["ResourceRetainedBillableTimeInSeconds"] >= 0
    cold_start = _starting_seconds(job)

    other, _ = start_sagemaker(clients, where_am_i, ResourceConfig={**resources, "VolumeSizeInGB": 32})  # no match
    second, _ = start_sagemaker(clients, checkpoint_counter, 2.0, ResourceConfig=resources,
                                CheckpointConfig={"S3Uri": f"s3://{BUCKET}/ckpt/{unique('warm')}"})
    wait_until(lambda: clients.sagemaker.describe_training_job(TrainingJobName=second)["SecondaryStatus"] == "Training")
    running = clients.sagemaker.describe_training_job(TrainingJobName=second)
    assert running["WarmPoolStatus"] == {"Status": "InUse"}
    old = clients.sagemaker.describe_training_job(TrainingJobName=first)["WarmPoolStatus"]
    assert old["Status"] == "Reused" and old["ReusedByJob"] == second

    job, _ = wait_sagemaker(clients, second)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert f"warm pool of training job {first}" in job["SecondaryStatusTransitions"][0]["StatusMessage"]
    assert _starting_seconds(job) < cold_start
    assert job["WarmPoolStatus"]["Status"] == "Available"  # its own pool now, for its own keep-alive
    job, _ = wait_sagemaker(clients, other)
    assert "warm pool" not in job["SecondaryStatusTransitions"][0]["StatusMessage"]


def _starting_seconds(job: dict) -> float:
    starting = job["SecondaryStatusTransitions"][0]
    assert starting["Status"] == "Starting"
    return (starting["EndTime"] - starting["StartTime"]).total_seconds()


def test_a_warm_pool_terminates_after_its_keep_alive(clients) -> None:
    name, _ = start_sagemaker(clients, where_am_i, ResourceConfig={
        "InstanceType": "ml.m5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30, "KeepAlivePeriodInSeconds": 1})
    job, _ = wait_sagemaker(clients, name)
    time.sleep(1.2)
    pool = clients.sagemaker.describe_training_job(TrainingJobName=name)["WarmPoolStatus"]
    assert pool == {"Status": "Terminated", "ResourceRetainedBillableTimeInSeconds": 1}


# --- 4. spot interruption -----------------------------------------------------------------------------------


def test_an_interrupted_spot_job_restarts_from_its_checkpoint(emulator, clients) -> None:
    uri = f"s3://{BUCKET}/ckpt/{unique('spot')}"
    name, _ = start_sagemaker(clients, checkpoint_counter, 60.0, EnableManagedSpotTraining=True,
                              StoppingCondition={"MaxRuntimeInSeconds": 300, "MaxWaitTimeInSeconds": 600},
                              CheckpointConfig={"S3Uri": uri})
    local = emulator.root / name / "opt" / "ml" / "checkpoints" / "count.txt"
    wait_until(lambda: local.exists())
    request = urllib.request.Request(f"{emulator.url}/_byoc/jobs/{name}/interrupt", method="POST")
    with urllib.request.urlopen(request) as answer:
        assert json.load(answer)["name"] == name
    job, seen = wait_sagemaker(clients, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert "Interrupted" in seen
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Interrupted", "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert "managed spot training instances were interrupted" in job["SecondaryStatusTransitions"][3]["StatusMessage"]
    assert result_of(clients, job["ModelArtifacts"]["S3ModelArtifacts"])["value"]["seen"] == 1
    assert job["BillableTimeInSeconds"] < job["TrainingTimeInSeconds"] or job["TrainingTimeInSeconds"] == 1
    # Only spot jobs can be interrupted, and only while they run.
    with pytest.raises(RuntimeError):
        emulator.interrupt(name)


def test_an_on_demand_job_cannot_be_interrupted(emulator, clients) -> None:
    name, _ = start_sagemaker(clients, where_am_i)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(f"{emulator.url}/_byoc/jobs/{name}/interrupt", method="POST"))
    assert e.value.code == 409
    wait_sagemaker(clients, name)


# --- 5. several instances --------------------------------------------------------------------------------------


@pytest.mark.parametrize("all_hosts", [False, True])
def test_two_instances_run_the_task_on_the_leader_only_unless_asked(clients, all_hosts: bool) -> None:
    extra = {byoc_entry.HP_ALL_HOSTS: "true"} if all_hosts else {}
    name, _ = start_sagemaker(clients, where_am_i, extra_hp=extra,
                              ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 30})
    job, _ = wait_sagemaker(clients, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    value = result_of(clients, job["ModelArtifacts"]["S3ModelArtifacts"])["value"]
    assert value[byoc_entry.ENV_TASK_CURRENT_HOST] == "algo-1" and value[byoc_entry.ENV_TASK_HOSTS] == "algo-1,algo-2"
    streams, _ = log_messages(clients.logs, "/aws/sagemaker/TrainingJobs", name)
    assert sorted(s.split("/")[1].rsplit("-", 1)[0] for s in streams) == ["algo-1", "algo-2"]
    by_host = {}
    for stream in streams:
        events = clients.logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"]
        by_host[stream.split("/")[1].rsplit("-", 1)[0]] = [e["message"] for e in events]
    assert "the task ran on algo-1" in by_host["algo-1"]
    if all_hosts:
        assert "the task ran on algo-2" in by_host["algo-2"]
    else:
        assert any("algo-2 is not the leader" in m for m in by_host["algo-2"]), by_host["algo-2"]
        assert not any("the task ran" in m for m in by_host["algo-2"])


def test_a_failing_host_fails_the_job_with_its_reason(clients) -> None:
    # Braket, three instances, the task on every host; it fails on algo-2 only.
    _, _, arn = start_braket(clients, fail_on, "algo-2", extra_hp={byoc_entry.HP_ALL_HOSTS: "true"},
                             instanceConfig={"instanceType": "ml.m5.large", "volumeSizeInGb": 30, "instanceCount": 3})
    job, _ = wait_braket(clients, arn)
    assert job["status"] == "FAILED" and job["instanceConfig"]["instanceCount"] == 3
    assert job["failureReason"] == "ValueError: failing on algo-2 on purpose"
    # The results of every host are combined, the leader's winning when it wrote one. The failing
    # host's end stops the others, so depending on timing the leader finished ("algo-1"), was
    # stopped in its task (JobStopped), or was stopped before it wrote anything (algo-2's error).
    outcome = result_of(clients, job["outputDataConfig"]["s3Path"] + "/output/model.tar.gz")
    exception = (outcome.get("exception") or {}).get("type", "")
    assert outcome.get("value") == "algo-1" or exception.endswith("JobStopped") or (
        exception == "ValueError" and "algo-2" in outcome["exception"]["message"]
    ), outcome


# --- 6. quantum tasks -------------------------------------------------------------------------------------------


def test_a_quantum_task_created_in_a_job_carries_its_token(emulator, clients) -> None:
    _, _, arn = start_braket(clients, create_quantum_task, BUCKET)
    job, _ = wait_braket(clients, arn)
    assert job["status"] == "COMPLETED", job.get("failureReason")
    task_arn = result_of(clients, job["outputDataConfig"]["s3Path"] + "/output/model.tar.gz")["value"]
    token = next(j for j in emulator._registry.all("braket") if j.arn == arn).job_token
    with urllib.request.urlopen(f"{emulator.url}/_byoc/quantum-tasks") as answer:
        recorded = {t["quantumTaskArn"]: t for t in json.load(answer)}
    assert recorded[task_arn]["jobToken"] == token and recorded[task_arn]["jobArn"] == arn
    task = clients.braket.get_quantum_task(quantumTaskArn=task_arn)
    assert task["status"] == "COMPLETED" and task["jobArn"] == arn and task["shots"] == 10


def test_a_malformed_quantum_task_is_refused(clients) -> None:
    braket = client(clients.s3.meta.endpoint_url, "braket", validate=False)
    with pytest.raises(ClientError) as e:
        braket.create_quantum_task(clientToken="t", deviceArn="not-a-device", shots=-1, outputS3Bucket=BUCKET,
                                   outputS3KeyPrefix="tasks", action="{}")
    assert e.value.response["Error"]["Code"] == "ValidationException"


# --- 7. network isolation -------------------------------------------------------------------------------------


def test_network_isolation_withholds_the_endpoint_and_credentials(clients) -> None:
    name, _ = start_sagemaker(clients, where_am_i, EnableNetworkIsolation=True)
    job, _ = wait_sagemaker(clients, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["EnableNetworkIsolation"] is True
    value = result_of(clients, job["ModelArtifacts"]["S3ModelArtifacts"])["value"]
    assert value["AWS_ENDPOINT_URL"] is None and value["AWS_ACCESS_KEY_ID"] is None
    assert value["BYOC_TEST_FLAG"] == "on"  # the request's Environment still reaches the task
