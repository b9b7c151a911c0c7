"""Pure logic: job names, request dicts, state tables."""

from __future__ import annotations

import json
import re

import botocore.session
import pytest
from botocore.validate import ParamValidator

from byoc_executor.container import byoc_entry as contract
from byoc_executor.services import JobState, client_token, job_name, map_state, stage
from byoc_executor.services import braket, sagemaker
from byoc_executor.settings import Settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/byoc-jobs"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,49}$")


def settings(**over: object) -> Settings:
    base = dict(service="braket", image_uri=IMAGE, s3_bucket_name="bkt", role_arn=ROLE)
    base.update(over)
    return Settings(**base)


@pytest.mark.parametrize(
    ("dispatch_id", "node_id"),
    [("2c0d1b9e-5a1f-4b47-9d0e-7e0c1a2b3c4d", 0), ("x" * 200, 10**15), ("--__--", 7), ("", 3)],
)
def test_job_names_fit_both_apis(dispatch_id: str, node_id: int) -> None:
    name = job_name(dispatch_id, node_id)
    assert NAME_PATTERN.match(name) and len(name) <= 50


def test_job_names_never_collide_and_are_stable() -> None:
    names = {job_name(f"dispatch-{d:04d}-aaaaaaaa", n) for d in range(200) for n in range(50)}
    assert len(names) == 200 * 50
    # Same first 8 characters of the dispatch id, other ids: still distinct.
    assert job_name("abcdefgh-1", 1) != job_name("abcdefgh-2", 1)
    assert job_name("d", 1) == job_name("d", 1)
    assert client_token("d", 1) == client_token("d", 1) != client_token("d", 2)


def _validate(service: str, operation: str, request: dict) -> None:
    model = botocore.session.get_session().get_service_model(service)
    report = ParamValidator().validate(request, model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def test_braket_request() -> None:
    s = settings(environment={"OMP_NUM_THREADS": "2"}, tags={"team": "q"}, device="local:braket/braket_sv")
    staged = stage(s, "dispatch-1", 4, {contract.HP_PROTOCOL: "2", contract.HP_PAYLOAD_DIGEST: "ab" * 32})
    request = braket.create_job_request(s, staged, "ef" * 32)
    _validate("braket", "CreateJob", request)
    assert request["jobName"] == staged.job_name
    assert request["clientToken"] == client_token("dispatch-1", 4)
    assert request["deviceConfig"] == {"device": "local:braket/braket_sv"}
    assert request["algorithmSpecification"]["scriptModeConfig"] == {
        "entryPoint": "byoc_entry:run_job",
        "s3Uri": "s3://bkt/byoc-executor/dispatch-1/node-4/source/source.tar.gz",
        "compressionType": "GZIP",
    }
    assert request["inputDataConfig"][0]["dataSource"]["s3DataSource"]["s3Uri"] == "s3://bkt/byoc-executor/dispatch-1/node-4/payload/"
    assert request["outputDataConfig"] == {"s3Path": "s3://bkt/byoc-executor/dispatch-1/node-4/output"}
    assert request["hyperParameters"] == {
        contract.HP_PROTOCOL: "2",
        contract.HP_PAYLOAD_DIGEST: "ab" * 32,
        contract.HP_ENVIRONMENT: json.dumps({"OMP_NUM_THREADS": "2"}),
        contract.HP_SOURCE_SHA256: "ef" * 32,
    }
    assert request["instanceConfig"] == {"instanceType": "ml.m5.large", "instanceCount": 1, "volumeSizeInGb": 30}
    assert request["stoppingCondition"] == {"maxRuntimeInSeconds": 3600}
    # The user's tags, and byoc-executor's own (they let `byoc-executor jobs` find the job later).
    assert request["tags"] == {"team": "q", "byoc:dispatch": "dispatch-1", "byoc:node": "4", "byoc:executor": "byoc-executor"}


def test_sagemaker_request() -> None:
    s = settings(service="sagemaker", instance_type="ml.g5.xlarge", environment={"A": "1"}, tags={"team": "q"}, max_runtime=60)
    staged = stage(s, "dispatch-1", 4, {contract.HP_PROTOCOL: "2"})
    request = sagemaker.create_training_job_request(s, staged)
    _validate("sagemaker", "CreateTrainingJob", request)
    assert request["TrainingJobName"] == staged.job_name
    assert request["AlgorithmSpecification"] == {"TrainingImage": IMAGE, "TrainingInputMode": "File"}
    channel = request["InputDataConfig"][0]
    assert channel["ChannelName"] == contract.PAYLOAD_CHANNEL
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == "s3://bkt/byoc-executor/dispatch-1/node-4/payload/"
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 60}
    assert request["Environment"] == {"A": "1"}
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {"team": "q", **_byoc_tags(request)}
    assert contract.HP_ENVIRONMENT not in request["HyperParameters"]


def test_state_tables_cover_the_models_enums() -> None:
    session = botocore.session.get_session()
    assert set(braket.STATES) == set(session.get_service_model("braket").shape_for("JobPrimaryStatus").enum)
    assert set(sagemaker.STATES) == set(session.get_service_model("sagemaker").shape_for("TrainingJobStatus").enum)


def test_unknown_status_maps_to_unknown_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert map_state(braket.STATES, "TELEPORTING", "braket") is JobState.UNKNOWN
    assert "TELEPORTING" in caplog.text
    assert not JobState.UNKNOWN.terminal


def _training_job(status: str, secondary: str, **extra: object) -> dict:
    return {
        "TrainingJobName": "cov-x",
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/p/output"},
        **extra,
    }


def test_sagemaker_status_translation() -> None:
    assert sagemaker.status_from_training_job(_training_job("InProgress", "Starting")).state is JobState.QUEUED
    assert sagemaker.status_from_training_job(_training_job("InProgress", "Training")).state is JobState.RUNNING
    done = sagemaker.status_from_training_job(_training_job("Completed", "Completed"))
    assert done.state is JobState.COMPLETED and done.results_uri == "s3://bkt/p/output/cov-x/output/model.tar.gz"
    stopped = sagemaker.status_from_training_job(_training_job("Stopped", "Stopped"))
    assert stopped.state is JobState.CANCELLED
    limit = sagemaker.status_from_training_job(_training_job("Stopped", "MaxRuntimeExceeded"))
    assert limit.state is JobState.FAILED and "MaxRuntimeExceeded" in limit.failure_reason


def _byoc_tags(request: dict) -> dict:
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    return {k: v for k, v in tags.items() if k.startswith("byoc:")}


def test_every_job_and_object_is_tagged_with_its_dispatch_node_and_executor() -> None:
    s = settings(service="sagemaker", tags={"team": "q"})
    staged = stage(s, "dispatch-9", 12, {}, server="host-a:48008")
    ours = {"byoc:dispatch": "dispatch-9", "byoc:node": "12", "byoc:executor": "byoc-executor"}
    assert staged.job_tags == {"team": "q", **ours, "byoc:server": "host-a:48008"}
    assert staged.object_tags == {"team": "q", **ours}
    assert len(staged.object_tags) <= 10  # S3's limit per object
    only_jobs = settings(service="sagemaker", tags={"team": "q"}, tag_objects=False)
    assert stage(only_jobs, "d", 1, {}).object_tags == {"byoc:dispatch": "d", "byoc:node": "1", "byoc:executor": "byoc-executor"}


def test_braket_log_streams_follow_the_arn_format() -> None:
    # Today's ARNs end in a UUID and the streams are <jobName>/<uuid>/algo-1-...; older ARNs ended
    # in the name (the Braket SDK's AwsQuantumJob._logs_prefix).
    uuid_arn = "arn:aws:braket:us-west-2:123456789012:job/6e9f7d5a-1b2c-4d3e-8f90-0a1b2c3d4e5f"
    assert braket.log_stream_prefix(uuid_arn, "cov-x") == "cov-x/6e9f7d5a-1b2c-4d3e-8f90-0a1b2c3d4e5f/"
    assert braket.log_stream_prefix("arn:aws:braket:us-west-2:123456789012:job/cov-x", "cov-x") == "cov-x/"


def test_braket_queue_position_is_read_from_queue_info() -> None:
    job = {
        "jobArn": "arn:aws:braket:us-east-1:123456789012:job/6e9f7d5a-1b2c-4d3e-8f90-0a1b2c3d4e5f",
        "jobName": "cov-x",
        "status": "QUEUED",
        "outputDataConfig": {"s3Path": "s3://bkt/p/output"},
        "queueInfo": {"queue": "JOBS_QUEUE", "position": ">15"},
    }
    assert braket.status_from_job(job).queue_position == ">15"
    job.update(status="RUNNING", queueInfo={"queue": "JOBS_QUEUE", "position": "None", "message": "Job is in RUNNING status."})
    assert braket.status_from_job(job).queue_position == ""


@pytest.mark.parametrize(
    ("instance_type", "has_volume_key"),
    [("ml.m5.large", True), ("ml.c5.xlarge", True), ("ml.p3.2xlarge", True), ("ml.g5.xlarge", False), ("ml.g4dn.xlarge", False),
     ("ml.p4d.24xlarge", False), ("ml.p3dn.24xlarge", False), ("ml.r5d.large", False), ("ml.trn1.2xlarge", False), ("ml.g6e.xlarge", False)],
)
def test_volume_key_only_where_sagemaker_takes_one(instance_type: str, has_volume_key: bool) -> None:
    """SageMaker refuses VolumeKmsKeyId for instance types with local storage (botocore's model)."""
    s = settings(service="sagemaker", instance_type=instance_type, kms_key_id=KMS)
    s.check_against_models()
    request = sagemaker.create_training_job_request(s, stage(s, "d", 1, {}))
    assert request["OutputDataConfig"]["KmsKeyId"] == KMS
    assert ("VolumeKmsKeyId" in request["ResourceConfig"]) is has_volume_key


def test_an_alias_may_encrypt_output_but_not_a_volume() -> None:
    from byoc_executor.errors import ConfigurationError

    on_local_storage = settings(service="sagemaker", instance_type="ml.g5.xlarge", kms_key_id="alias/team-q")
    on_local_storage.check_shapes()  # the alias goes only to OutputDataConfig.KmsKeyId, which takes one
    with pytest.raises(ConfigurationError) as err:
        settings(service="sagemaker", instance_type="ml.m5.large", kms_key_id="alias/team-q").check_shapes()
    assert err.value.setting == "kms_key_id" and "VolumeKmsKeyId takes a key id or key ARN" in str(err.value)
    settings(kms_key_id="alias/team-q").check_shapes()  # Braket: output only


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"tags": {f"t{i}": "v" for i in range(8)}}, "at most 7, or set tag_objects = false"),
        ({"tags": {f"t{i}": "v" for i in range(47)}, "tag_objects": False}, "at most 46"),
        ({"tags": {"aws:x": "v"}}, "aws: is reserved"),
        ({"tags": {"byoc:dispatch": "v"}}, "byoc: is reserved"),
        ({"tags": {"k": "v" * 257}}, "at most 256"),
        ({"tags": {"k": "a;b"}}, "letters, digits"),
        ({"service": "sagemaker", "environment": {f"V{i}": "x" for i in range(101)}}, "at most 100"),
        ({"service": "sagemaker", "environment": {"V": "x" * 513}}, "values of at most 512"),
        ({"environment": {"V": "x" * 2500}}, "one hyperparameter of at most 2500 characters"),
    ],
)
def test_limits_are_refused_with_the_setting_and_the_limit(over: dict, fragment: str) -> None:
    from byoc_executor.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        settings(**over).check_shapes()
    assert err.value.setting in ("tags", "environment")
    assert fragment in str(err.value)


def test_limits_at_their_edge_are_accepted() -> None:
    settings(tags={f"t{i}": "v" for i in range(7)}).check_shapes()
    settings(tags={f"t{i}": "v" for i in range(46)}, tag_objects=False).check_shapes()
    settings(service="sagemaker", environment={f"V{i}": "x" * 512 for i in range(100)}).check_shapes()
    big = settings(environment={"V": "x" * 2480})
    big.check_shapes()
    hp = braket.create_job_request(big, stage(big, "d", 1, {}), "ab" * 32)["hyperParameters"]
    assert max(len(v) for v in hp.values()) <= 2500


def test_braket_status_translation() -> None:
    job = {
        "jobArn": "arn:aws:braket:us-east-1:123456789012:job/cov-x",
        "jobName": "cov-x",
        "status": "FAILED",
        "failureReason": "ValueError: bad",
        "outputDataConfig": {"s3Path": "s3://bkt/p/output"},
        "events": [{"eventType": "WAITING_FOR_PRIORITY"}, {"eventType": "FAILED", "message": "x"}],
    }
    status = braket.status_from_job(job)
    assert status.state is JobState.FAILED
    assert status.failure_reason == "ValueError: bad"
    assert status.results_uri == "s3://bkt/p/output/output/model.tar.gz"
    assert status.log_stream_prefix == "cov-x/"


KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_sagemaker_job_options_reach_the_request() -> None:
    s = settings(
        service="sagemaker",
        use_spot=True,
        max_runtime=600,
        checkpoint_s3_uri="s3://bkt/ckpt/run-1",
        subnets=["subnet-0abc1234"],
        security_group_ids=["sg-0abc1234"],
        enable_network_isolation=True,
        encrypt_inter_container_traffic=True,
        kms_key_id=KMS,
        instance_count=2,
        run_on_all_hosts=True,
    )
    s.check_shapes()
    request = sagemaker.create_training_job_request(s, stage(s, "d", 1, {}))
    _validate("sagemaker", "CreateTrainingJob", request)
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200}
    assert request["CheckpointConfig"] == {"S3Uri": "s3://bkt/ckpt/run-1"}
    assert request["VpcConfig"] == {"Subnets": ["subnet-0abc1234"], "SecurityGroupIds": ["sg-0abc1234"]}
    assert request["EnableNetworkIsolation"] is True and request["EnableInterContainerTrafficEncryption"] is True
    assert request["OutputDataConfig"]["KmsKeyId"] == KMS and request["ResourceConfig"]["VolumeKmsKeyId"] == KMS
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["HyperParameters"][contract.HP_ALL_HOSTS] == "true"


def test_sagemaker_warm_pool_and_explicit_max_wait() -> None:
    warm = settings(service="sagemaker", keep_alive_period=1800)
    request = sagemaker.create_training_job_request(warm, stage(warm, "d", 1, {}))
    _validate("sagemaker", "CreateTrainingJob", request)
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 1800
    assert "EnableManagedSpotTraining" not in request
    spot = settings(service="sagemaker", use_spot=True, max_runtime=600, max_wait=900)
    assert sagemaker.create_training_job_request(spot, stage(spot, "d", 1, {}))["StoppingCondition"]["MaxWaitTimeInSeconds"] == 900


def test_braket_job_options_reach_the_request() -> None:
    reservation = "arn:aws:braket:us-east-1:123456789012:reservation/a1b2c3d4-0000-1111-2222-333344445555"
    s = settings(checkpoint_s3_uri="s3://bkt/ckpt", kms_key_id=KMS, reservation_arn=reservation, instance_count=3)
    s.check_shapes()
    request = braket.create_job_request(s, stage(s, "d", 1, {}), "ab" * 32)
    _validate("braket", "CreateJob", request)
    assert request["checkpointConfig"] == {"s3Uri": "s3://bkt/ckpt"}
    assert request["outputDataConfig"]["kmsKeyId"] == KMS
    assert request["associations"] == [{"arn": reservation, "type": "RESERVATION_TIME_WINDOW_ARN"}]
    assert request["instanceConfig"]["instanceCount"] == 3
    assert contract.HP_ALL_HOSTS not in request["hyperParameters"]


@pytest.mark.parametrize(
    ("over", "setting", "fragment"),
    [
        ({"use_spot": True}, "use_spot", "no managed spot"),
        ({"subnets": ["subnet-0abc1234"], "security_group_ids": ["sg-0abc1234"]}, "subnets", "no VPC configuration"),
        ({"keep_alive_period": 60}, "keep_alive_period", "no warm pools"),
        ({"enable_network_isolation": True}, "enable_network_isolation", "no network isolation"),
        ({"service": "sagemaker", "reservation_arn": "arn:aws:braket:us-east-1:123456789012:reservation/x"}, "reservation_arn", "Braket feature"),
        ({"service": "sagemaker", "max_wait": 100}, "max_wait", "without use_spot"),
        ({"service": "sagemaker", "use_spot": True, "max_runtime": 600, "max_wait": 300}, "max_wait", ">= max_runtime"),
        ({"service": "sagemaker", "use_spot": True, "keep_alive_period": 60}, "keep_alive_period", "not available for managed spot"),
        ({"service": "sagemaker", "keep_alive_period": 99_999}, "keep_alive_period", "0 to 21600"),
        ({"service": "sagemaker", "subnets": ["subnet-0abc1234"]}, "security_group_ids", "give both"),
        ({"service": "sagemaker", "subnets": ["vpc-1"], "security_group_ids": ["sg-0abc1234"]}, "subnets", "subnet-0abc1234"),
        ({"checkpoint_s3_uri": "bkt/ckpt"}, "checkpoint_s3_uri", "s3://"),
        ({"kms_key_id": "my key"}, "kms_key_id", "alias/<name>"),
        ({"kms_key_id": "key/1234"}, "kms_key_id", "a key ARN, a key id"),
        ({"reservation_arn": "reservation-1"}, "reservation_arn", "reservation/<id>"),
        ({"subnets": "subnet-0abc1234"}, "subnets", "list of strings"),
    ],
)
def test_job_options_refused_with_the_setting_and_the_fix(over: dict, setting: str, fragment: str) -> None:
    from byoc_executor.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        settings(**over).check_shapes()
    assert err.value.setting == setting
    assert fragment in str(err.value)


@pytest.mark.parametrize("prefix, expected", [("byoc", "byoc/dispatch-1/"), ("", "dispatch-1/"), ("a/b/", "a/b/dispatch-1/")])
def test_every_electron_of_a_dispatch_shares_its_prefix(prefix: str, expected: str) -> None:
    s = settings(s3_prefix=prefix)
    first, second = stage(s, "dispatch-1", 1, {}), stage(s, "dispatch-1", 2, {})
    assert first.dispatch_prefix == second.dispatch_prefix == expected
    assert first.base.key.startswith(expected) and stage(s, "dispatch-2", 1, {}).dispatch_prefix != expected
