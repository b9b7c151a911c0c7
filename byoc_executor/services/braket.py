"""Amazon Braket hybrid jobs: CreateJob / GetJob / CancelJob (botocore model braket/2019-09-01)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import raise_aws_error
from byoc_executor.services import JobState, JobStatus, StagedTask, hyperparameters, map_state
from byoc_executor.settings import Settings, braket_environment

LOG_GROUP = "/aws/braket/jobs"

STATES: dict[str, JobState] = {
    "QUEUED": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLING": JobState.CANCELLING,
    "CANCELLED": JobState.CANCELLED,
}


def create_job_request(settings: Settings, staged: StagedTask, source_sha256: str) -> dict[str, Any]:
    """The CreateJob request for one electron (pure: nothing is uploaded or sent here).

    Args:
        source_sha256: the digest of the source archive at ``staged.source``; the job refuses
            an archive with any other.
    """
    hp = hyperparameters(staged)
    hp[contract.HP_SOURCE_SHA256] = source_sha256
    if settings.environment:
        # CreateJob has no environment field: the runner applies this before the task runs.
        hp[contract.HP_ENVIRONMENT] = braket_environment(settings.environment)
    request: dict[str, Any] = {
        "clientToken": staged.client_token,
        "jobName": staged.job_name,
        "roleArn": settings.role_arn,
        "algorithmSpecification": {
            "containerImage": {"uri": settings.image_uri},
            "scriptModeConfig": {
                "entryPoint": contract.BRAKET_ENTRY_POINT,
                "s3Uri": staged.source.uri,
                "compressionType": "GZIP",
            },
        },
        "inputDataConfig": [
            {"channelName": contract.PAYLOAD_CHANNEL, "dataSource": {"s3DataSource": {"s3Uri": staged.payload_prefix.uri}}}
        ],
        "outputDataConfig": {"s3Path": staged.output.uri},
        "instanceConfig": {
            "instanceType": settings.instance_type,
            "instanceCount": settings.instance_count,
            "volumeSizeInGb": settings.volume_size_gb,
        },
        "stoppingCondition": {"maxRuntimeInSeconds": settings.max_runtime},
        "deviceConfig": {"device": settings.device},
        "hyperParameters": hp,
    }
    if settings.run_on_all_hosts:
        hp[contract.HP_ALL_HOSTS] = "true"
    if staged.job_tags:
        request["tags"] = dict(staged.job_tags)
    if settings.checkpoint_s3_uri:
        request["checkpointConfig"] = {"s3Uri": settings.checkpoint_s3_uri}
        # Tells the entry script the job has one: unconfirmed whether Braket sets
        # AMZN_BRAKET_CHECKPOINT_DIR without it, so the variable alone is not trusted.
        hp[contract.HP_CHECKPOINTS] = "true"
    if settings.kms_key_id:
        request["outputDataConfig"]["kmsKeyId"] = settings.kms_key_id
    if settings.reservation_arn:
        # Braket Direct: the job's quantum tasks run in this reserved window on the device.
        request["associations"] = [{"arn": settings.reservation_arn, "type": "RESERVATION_TIME_WINDOW_ARN"}]
    return request


def log_stream_prefix(job_arn: str, job_name: str) -> str:
    """``<jobName>/<uuid>/`` for a job whose ARN ends in a UUID (today's ARNs), ``<jobName>/`` for
    one whose ARN ends in its name (older ARNs): the Braket SDK's ``AwsQuantumJob._logs_prefix``."""
    last = job_arn.rsplit("/", 1)[-1]
    return f"{job_name}/" if last == job_name else f"{job_name}/{last}/"


def status_from_job(job: dict[str, Any]) -> JobStatus:
    """A GetJob answer in the project's vocabulary."""
    raw = job.get("status", "")
    events = job.get("events") or []
    position = str((job.get("queueInfo") or {}).get("position") or "")
    return JobStatus(
        job_id=job["jobArn"],
        state=map_state(STATES, raw, "braket"),
        raw_status=raw,
        detail=events[-1].get("eventType", "") if events else "",
        failure_reason=job.get("failureReason", ""),
        results_uri=f"{job['outputDataConfig']['s3Path'].rstrip('/')}/output/model.tar.gz",
        log_group=LOG_GROUP,
        log_stream_prefix=log_stream_prefix(job["jobArn"], job["jobName"]),
        progress=[f"{e.get('eventType', '')}: {e.get('message', '')}".rstrip(": ") for e in events],
        queue_position="" if position == "None" else position,  # the API says "None" once it runs
    )


class BraketJobs:
    """The Braket job API on a shared aiobotocore client."""

    name = "braket"
    log_group = LOG_GROUP

    def __init__(self, client: Any):
        self._client = client

    async def submit(self, request: dict[str, Any]) -> str:
        # The clientToken makes a retried CreateJob return the job the first attempt created.
        try:
            answer = await self._client.create_job(**request)
        except ClientError as e:
            raise_aws_error(e, "CreateJob", request["jobName"])
        return answer["jobArn"]

    async def describe(self, job_id: str) -> JobStatus:
        try:
            # queueInfo comes only when asked for (braket/2019-09-01 GetJob additionalAttributeNames).
            job = await self._client.get_job(jobArn=job_id, additionalAttributeNames=["QueueInfo"])
        except ClientError as e:
            raise_aws_error(e, "GetJob", job_id)
        return status_from_job(job)

    def log_stream_prefix(self, job_id: str, job_name: str) -> str:
        return log_stream_prefix(job_id, job_name)

    async def cancel(self, job_id: str) -> None:
        try:
            await self._client.cancel_job(jobArn=job_id)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConflictException":
                return  # already terminal or already cancelling
            raise_aws_error(e, "CancelJob", job_id)
