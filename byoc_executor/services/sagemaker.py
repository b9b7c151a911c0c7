"""SageMaker training jobs: CreateTrainingJob / DescribeTrainingJob / StopTrainingJob (sagemaker/2017-07-24)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import ResourceNotFoundError, raise_aws_error
from byoc_executor.services import JobState, JobStatus, StagedTask, hyperparameters, map_state
from byoc_executor.settings import Settings

LOG_GROUP = "/aws/sagemaker/TrainingJobs"

STATES: dict[str, JobState] = {
    "InProgress": JobState.RUNNING,
    "Completed": JobState.COMPLETED,
    "Failed": JobState.FAILED,
    "Stopping": JobState.CANCELLING,
    "Stopped": JobState.CANCELLED,
    # DeleteTrainingJob was called on it: it will never produce a result.
    "Deleting": JobState.CANCELLED,
}

# Secondary statuses under InProgress that mean "no instance is running the task yet".
_WAITING = {"Starting", "Pending"}
# Secondary statuses under Stopped that mean the service, not the user, ended the job.
_STOPPED_BY_SERVICE = {"MaxRuntimeExceeded", "MaxWaitTimeExceeded"}


def create_training_job_request(settings: Settings, staged: StagedTask) -> dict[str, Any]:
    """The CreateTrainingJob request for one electron (pure: nothing is uploaded or sent here)."""
    request: dict[str, Any] = {
        "TrainingJobName": staged.job_name,
        "RoleArn": settings.role_arn,
        "AlgorithmSpecification": {"TrainingImage": settings.image_uri, "TrainingInputMode": "File"},
        "InputDataConfig": [
            {
                "ChannelName": contract.PAYLOAD_CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": staged.payload_prefix.uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": staged.output.uri},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": settings.instance_count,
            "VolumeSizeInGB": settings.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime},
        "HyperParameters": hyperparameters(staged),
    }
    if settings.run_on_all_hosts:
        request["HyperParameters"][contract.HP_ALL_HOSTS] = "true"
    if settings.environment:
        request["Environment"] = dict(settings.environment)
    if staged.job_tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in staged.job_tags.items()]
    if settings.use_spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = settings.spot_max_wait
    if settings.checkpoint_s3_uri:
        # LocalPath left to its default (/opt/ml/checkpoints), where the entry script looks. The
        # container is not told that the job has a CheckpointConfig: the hyperparameter says so.
        request["CheckpointConfig"] = {"S3Uri": settings.checkpoint_s3_uri}
        request["HyperParameters"][contract.HP_CHECKPOINTS] = "true"
    if settings.keep_alive_period:
        request["ResourceConfig"]["KeepAlivePeriodInSeconds"] = settings.keep_alive_period
    if settings.subnets:
        request["VpcConfig"] = {"Subnets": list(settings.subnets), "SecurityGroupIds": list(settings.security_group_ids)}
    if settings.enable_network_isolation:
        request["EnableNetworkIsolation"] = True
    if settings.encrypt_inter_container_traffic:
        request["EnableInterContainerTrafficEncryption"] = True
    if settings.kms_key_id:
        request["OutputDataConfig"]["KmsKeyId"] = settings.kms_key_id
    if settings.encrypts_volume:
        # Not for instance types with local storage: SageMaker refuses it there (the instance's
        # hardware encrypts that storage). See settings.has_instance_storage.
        request["ResourceConfig"]["VolumeKmsKeyId"] = settings.kms_key_id
    return request


def status_from_training_job(job: dict[str, Any]) -> JobStatus:
    """A DescribeTrainingJob answer in the project's vocabulary."""
    raw = job.get("TrainingJobStatus", "")
    secondary = job.get("SecondaryStatus", "")
    state = map_state(STATES, raw, "sagemaker")
    reason = job.get("FailureReason", "")
    if state is JobState.RUNNING and secondary in _WAITING:
        state = JobState.QUEUED
    if state is JobState.CANCELLED and secondary in _STOPPED_BY_SERVICE:
        # Nobody asked for this stop: the job hit its limit, which is a failure of the task.
        state = JobState.FAILED
        reason = reason or f"{secondary}: the job was stopped by SageMaker's stopping condition"
    name = job["TrainingJobName"]
    artifacts = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    output = job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    transitions = job.get("SecondaryStatusTransitions") or []
    return JobStatus(
        job_id=name,
        state=state,
        raw_status=raw,
        detail=secondary,
        failure_reason=reason,
        results_uri=artifacts or f"{output}/{name}/output/model.tar.gz",
        log_group=LOG_GROUP,
        log_stream_prefix=f"{name}/",
        progress=[f"{t.get('Status', '')}: {t.get('StatusMessage', '')}".rstrip(": ") for t in transitions],
    )


class SageMakerTrainingJobs:
    """The SageMaker training API on a shared aiobotocore client."""

    name = "sagemaker"
    log_group = LOG_GROUP

    def __init__(self, client: Any):
        self._client = client

    async def submit(self, request: dict[str, Any]) -> str:
        name = request["TrainingJobName"]
        try:
            await self._client.create_training_job(**request)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ResourceInUse":
                raise_aws_error(e, "CreateTrainingJob", name)
            # The name is derived from the electron: a job of that name is this electron's own,
            # created by an earlier attempt whose answer was lost. Adopt it.
        return name

    async def describe(self, job_id: str) -> JobStatus:
        try:
            job = await self._client.describe_training_job(TrainingJobName=job_id)
        except ClientError as e:
            if _code(e) == "ValidationException":
                # SageMaker answers an unknown name with ValidationException ("Requested resource
                # not found."); the name is the executor's own and well-formed, so that is its meaning.
                raise ResourceNotFoundError("DescribeTrainingJob", _code(e), str(e), resource=job_id) from e
            raise_aws_error(e, "DescribeTrainingJob", job_id)
        return status_from_training_job(job)

    async def cancel(self, job_id: str) -> None:
        try:
            await self._client.stop_training_job(TrainingJobName=job_id)
        except ClientError as e:
            if _code(e) != "ValidationException":
                raise_aws_error(e, "StopTrainingJob", job_id)
            # ValidationException is both "already ended" and "no such job": ask which.
            status = await self.describe(job_id)  # ResourceNotFoundError if there is no such job
            if not status.state.terminal and status.state is not JobState.CANCELLING:
                raise_aws_error(e, "StopTrainingJob", job_id)

    def log_stream_prefix(self, job_id: str, job_name: str) -> str:
        return f"{job_name}/"


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
