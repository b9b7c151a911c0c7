"""Job options through the executor against the emulator: each reaches the job's description, and what can be emulated acts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import covalent as ct
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS

from byoc_executor.container import byoc_entry as contract
from byoc_executor.services import braket, sagemaker, stage
from byoc_executor.settings import Settings
from tests.conftest import BUCKET, IMAGE, ROLE
from tests.test_executor_emulator import boto, execute, executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])

KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def describe(emulator, service: str, listener) -> dict:
    (handle,) = listener.job_handles
    if service == "braket":
        return boto(emulator, "braket").get_job(jobArn=handle["job_id"])
    return boto(emulator, "sagemaker").describe_training_job(TrainingJobName=handle["job_id"])


def environment_and_hosts() -> dict:
    return {k: os.environ.get(k) for k in ("BYOC_OPTION", "BYOC_CHECKPOINT_DIR", "BYOC_HOSTS")}


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
async def test_tags_and_kms_on_every_uploaded_object_and_on_the_job(emulator, service: str) -> None:
    ex = executor(emulator, service, tags={"team": "quantum", "cost-center": "42"}, kms_key_id=KMS, keep_artifacts=True, s3_prefix="tagged")
    value, _, stderr, status, listener = await execute(ex, environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    s3 = boto(emulator, "s3")
    uploaded = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="tagged/").get("Contents", []) if "/output/" not in o["Key"]]
    assert uploaded and all(k.endswith(("task.byoc", "source.tar.gz")) for k in uploaded)
    for key in uploaded:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == KMS, key
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}
        # The user's tags, and byoc-executor's own naming the dispatch, the node and the executor.
        dispatch = tags.get("byoc:dispatch", "")
        assert tags == {"team": "quantum", "cost-center": "42", "byoc:dispatch": dispatch, "byoc:node": "3",
                        "byoc:executor": "byoc-executor"}, key
        assert f"/{dispatch}/node-3/" in key
    job = describe(emulator, service, listener)
    if service == "braket":
        assert job["outputDataConfig"]["kmsKeyId"] == KMS
        tags = job["tags"]
    else:
        assert job["OutputDataConfig"]["KmsKeyId"] == KMS and job["ResourceConfig"]["VolumeKmsKeyId"] == KMS
        tags = {t["Key"]: t["Value"] for t in boto(emulator, "sagemaker").list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert {k: v for k, v in tags.items() if not k.startswith("byoc:")} == {"team": "quantum", "cost-center": "42"}
    assert tags["byoc:node"] == "3" and tags["byoc:executor"] == "byoc-executor" and tags["byoc:server"]


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
async def test_environment_checkpoint_dir_and_hosts_reach_the_task(emulator, service: str) -> None:
    ex = executor(emulator, service, environment={"BYOC_OPTION": "on"}, checkpoint_s3_uri=f"s3://{BUCKET}/ckpt/{service}")
    value, _, stderr, status, listener = await execute(ex, environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value["BYOC_OPTION"] == "on" and value["BYOC_HOSTS"] == "algo-1"
    job = describe(emulator, service, listener)
    if service == "braket":
        assert job["checkpointConfig"]["s3Uri"] == f"s3://{BUCKET}/ckpt/{service}"
        assert job["hyperParameters"][contract.HP_CHECKPOINTS] == "true"
        # The API's default localPath, which Braket names through AMZN_BRAKET_CHECKPOINT_DIR.
        assert value["BYOC_CHECKPOINT_DIR"].endswith("/opt/braket/checkpoints")
    else:
        assert job["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/ckpt/{service}"
        assert job["HyperParameters"][contract.HP_CHECKPOINTS] == "true"
        assert value["BYOC_CHECKPOINT_DIR"].endswith("/opt/ml/checkpoints")  # CheckpointConfig.LocalPath's default


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
async def test_without_checkpoint_s3_uri_the_task_gets_no_checkpoint_dir(emulator, service: str) -> None:
    """Nothing syncs a directory of a job without a checkpoint configuration: the task is told of none."""
    value, _, stderr, status, listener = await execute(executor(emulator, service), environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value["BYOC_CHECKPOINT_DIR"] is None and value["BYOC_HOSTS"] == "algo-1"
    job = describe(emulator, service, listener)
    config, hp = ("checkpointConfig", "hyperParameters") if service == "braket" else ("CheckpointConfig", "HyperParameters")
    assert config not in job and contract.HP_CHECKPOINTS not in job[hp]


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
@pytest.mark.parametrize("checkpoints", ["", f"s3://{BUCKET}/ckpt/flag"])
def test_the_request_carries_the_checkpoint_flag_exactly_when_checkpoint_s3_uri_is_set(service: str, checkpoints: str) -> None:
    """The entry script's only sign of a checkpoint configuration (SageMaker tells the container nothing)."""
    settings = Settings(service=service, image_uri=IMAGE, s3_bucket_name=BUCKET, role_arn=ROLE, checkpoint_s3_uri=checkpoints)
    staged = stage(settings, "dispatch-1", 3, {contract.HP_PROTOCOL: "2", contract.HP_PAYLOAD_DIGEST: "ab" * 32})
    if service == "braket":
        request = braket.create_job_request(settings, staged, "ef" * 32)
        config, hp = request.get("checkpointConfig"), request["hyperParameters"]
    else:
        request = sagemaker.create_training_job_request(settings, staged)
        config, hp = request.get("CheckpointConfig"), request["HyperParameters"]
    if checkpoints:
        assert config is not None and hp[contract.HP_CHECKPOINTS] == "true"
    else:
        assert config is None and contract.HP_CHECKPOINTS not in hp


async def test_sagemaker_spot_vpc_isolation_and_encryption_read_back(emulator) -> None:
    ex = executor(
        emulator,
        "sagemaker",
        use_spot=True,
        max_runtime=300,
        subnets=["subnet-0abc1234"],
        security_group_ids=["sg-0abc1234"],
        encrypt_inter_container_traffic=True,
        enable_network_isolation=True,
    )
    value, _, stderr, status, listener = await execute(ex, environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    job = describe(emulator, "sagemaker", listener)
    assert job["EnableNetworkIsolation"] is True
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 300, "MaxWaitTimeInSeconds": 600}
    assert job["VpcConfig"] == {"Subnets": ["subnet-0abc1234"], "SecurityGroupIds": ["sg-0abc1234"]}
    assert job["EnableInterContainerTrafficEncryption"] is True


async def test_braket_reservation_read_back(emulator) -> None:
    reservation = "arn:aws:braket:us-east-1:123456789012:reservation/a1b2c3d4-0000-1111-2222-333344445555"
    value, _, stderr, status, listener = await execute(executor(emulator, "braket", reservation_arn=reservation), environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert describe(emulator, "braket", listener)["associations"] == [{"arn": reservation, "type": "RESERVATION_TIME_WINDOW_ARN"}]


@pytest.mark.covalent
def test_electron_dependencies_run_inside_the_job(covalent_server, emulator, bucket, tmp_path) -> None:
    """DepsBash, DepsCall (call_before) and call_after run in the job's process, not in the server."""
    from byoc_executor import BYOCExecutor

    from tests.conftest import IMAGE, ROLE

    sagemaker = BYOCExecutor(service="sagemaker", image_uri=IMAGE, s3_bucket_name=bucket, role_arn=ROLE, endpoint_url=emulator.url, poll_freq=1)
    marker = tmp_path / "bash-ran"

    def set_env() -> None:
        import os as _os

        _os.environ["BYOC_DEP_CALL"] = f"before in pid {_os.getpid()}"

    def after() -> None:
        print("call_after ran", flush=True)

    @ct.electron(
        executor=sagemaker,
        deps_bash=ct.DepsBash([f"echo bash-ran-in-job > {marker}"]),
        call_before=[ct.DepsCall(set_env)],
        call_after=[ct.DepsCall(after)],
    )
    def task() -> dict:
        import os as _os

        return {"call_before": _os.environ.get("BYOC_DEP_CALL"), "pid": _os.getpid()}

    @ct.lattice(executor="local", workflow_executor="local")
    def workflow():
        return task()

    dispatch_id = covalent_server.dispatch(workflow)
    result = covalent_server.result(dispatch_id, timeout=180)
    assert str(result.status) == "COMPLETED", result.error
    value = result.result
    # call_before ran in the same process as the task: the job's, not the Covalent server's.
    assert value["call_before"] == f"before in pid {value['pid']}"
    assert marker.read_text().strip() == "bash-ran-in-job"
    node = next(result.get_node_result(n) for n in result.lattice.transport_graph._graph.nodes if result.get_node_result(n)["node_name"] == "task")
    assert "call_after ran" in node["stdout"]


def count_runs_in_checkpoint(seconds: float) -> list[int]:
    """Appends this run's number to a checkpoint file, sleeps, and returns every run's number."""
    import json as _json
    import os as _os
    import time as _time

    path = _os.path.join(_os.environ["BYOC_CHECKPOINT_DIR"], "runs.json")
    runs = _json.load(open(path)) if _os.path.exists(path) else []
    runs.append(len(runs) + 1)
    _os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        _json.dump(runs, f)
    print(f"run {runs[-1]}", flush=True)
    _time.sleep(seconds)
    return runs


async def test_interrupted_spot_job_is_followed_to_its_real_end(emulator) -> None:
    import asyncio

    from tests.test_executor_emulator import running_job

    async def interrupt(listener) -> None:
        name = await running_job(emulator, listener)
        # Interrupt once the first run has written its checkpoint (its process may still be
        # importing the task when the job is first seen running).
        written = Path(emulator.root) / name / "opt" / "ml" / "checkpoints" / "runs.json"
        for _ in range(600):
            if written.exists():
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(emulator.interrupt, name)

    ex = executor(emulator, "sagemaker", use_spot=True, checkpoint_s3_uri=f"s3://{BUCKET}/ckpt/spot-{os.getpid()}-{id(emulator)}")
    value, stdout, stderr, status, listener = await execute(ex, count_runs_in_checkpoint, 4.0, meanwhile=interrupt)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value == [1, 2]  # the second run resumed from the first run's checkpoint
    assert "Interrupted" in stderr  # a [byoc] progress line
    job = describe(emulator, "sagemaker", listener)
    assert job["TrainingJobStatus"] == "Completed" and job["BillableTimeInSeconds"] <= job["TrainingTimeInSeconds"]


async def test_consecutive_electrons_reuse_a_warm_pool(emulator) -> None:
    ex = executor(emulator, "sagemaker", keep_alive_period=600)
    _, _, stderr, status, first = await execute(ex, environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    _, _, stderr, status, second = await execute(executor(emulator, "sagemaker", keep_alive_period=600), environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    before, after = describe(emulator, "sagemaker", first), describe(emulator, "sagemaker", second)
    assert before["WarmPoolStatus"]["Status"] == "Reused" and before["WarmPoolStatus"]["ReusedByJob"] == after["TrainingJobName"]
    assert after["WarmPoolStatus"]["Status"] in ("Available", "InUse")


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
async def test_several_instances_run_the_task_once(emulator, service: str) -> None:
    value, stdout, stderr, status, _ = await execute(executor(emulator, service, instance_count=2), environment_and_hosts)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value["BYOC_HOSTS"] == "algo-1,algo-2"
