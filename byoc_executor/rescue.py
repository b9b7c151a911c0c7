"""Finding, collecting and cancelling byoc-executor's jobs without the Covalent server that started them.

Every job carries byoc-executor's tags (``services.TAG_*``): the dispatch, the node, the executor
and the server that follows it. This module finds jobs by those tags (Braket SearchJobs, whose
JobSummary carries the tags; SageMaker ListTrainingJobs, names containing ``cov-``, and ListTags),
cancels them, and reads a finished job's value the way the executor does, trusting nothing in S3
that the job's request does not pin:

1. The job's description (immutable) gives its payload channel (``payload`` ->
   ``<prefix>/<dispatch>/node-<n>/payload/``), its ``byoc_payload_digest`` hyperparameter and its
   results archive.
2. The payload is read and verified against that digest (``contract.open_envelope``); only then
   is the result key in its header trusted. A payload replaced after submission is refused.
3. The results archive is verified with that key and unpickled (``codec.read_results_archive``);
   a result planted without the key is refused before anything is unpickled.

The ``byoc-executor jobs | cancel | result`` commands (``rescue_cli.py``) are its face; a new
Covalent server uses ``list_jobs`` to log jobs of an earlier process of itself (``server_stop.py``).
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from byoc_executor import aws, codec, storage
from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import BYOCError, InvalidRequestError, ResourceNotFoundError, ResultError, raise_aws_error
from byoc_executor.services import (
    EXECUTOR_TAG_VALUE, TAG_DISPATCH, TAG_EXECUTOR, TAG_NODE, TAG_SERVER, JobState, JobStatus, job_name, map_state,
)
from byoc_executor.services import braket as braket_service
from byoc_executor.services import sagemaker as sagemaker_service
from byoc_executor.services.braket import BraketJobs
from byoc_executor.services.sagemaker import SageMakerTrainingJobs

SERVICES = ("braket", "sagemaker")
NAME_MARK = "cov-"  # every job name starts with it (services.job_name)
PAGE = 100
DESCRIBE_CONCURRENCY = 8
_RUNNING_SAGEMAKER = ("InProgress", "Stopping")


class JobNotFinished(BYOCError):
    """The job has not ended yet: it has no value to collect."""

    def __init__(self, status: JobStatus):
        self.status = status
        super().__init__(f"job {status.job_id} is still {status.raw_status}: collect its value once it has ended")


class JobNotFound(BYOCError):
    """No job of that id or name."""


@dataclass
class JobRecord:
    """One of byoc-executor's jobs, as ``byoc-executor jobs`` shows it."""

    service: str
    job_id: str
    """What the other commands take: the Braket job's ARN, the SageMaker training job's name."""
    job_name: str
    dispatch: str
    node: str
    server: str
    state: JobState
    raw_status: str
    created: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    billable_seconds: float | None = None
    """What the service bills (Braket billableDuration, SageMaker BillableTimeInSeconds); known once it ended."""
    tags: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def running(self) -> bool:
        return not self.state.terminal

    def as_json(self) -> dict[str, Any]:
        def when(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "service": self.service, "job_id": self.job_id, "job_name": self.job_name, "dispatch": self.dispatch,
            "node": self.node, "server": self.server, "state": self.state.value, "status": self.raw_status,
            "created": when(self.created), "started": when(self.started), "ended": when(self.ended),
            "billable_seconds": self.billable_seconds,
        }


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, datetime) else aws.parse_aws_timestamp(value)


def service_of(job: str) -> str | None:
    """The service a job id names: a Braket ARN, a SageMaker ARN; None for a bare name (either)."""
    parts = job.split(":")
    if job.startswith("arn:") and len(parts) >= 6:
        return parts[2] if parts[2] in SERVICES else None
    return None


def region_of(job: str) -> str:
    """The region in a job ARN ("" for a name)."""
    parts = job.split(":")
    return parts[3] if job.startswith("arn:") and len(parts) >= 6 else ""


async def _client(service: str, target: aws.AWSTarget) -> Any:
    return await aws.pool().client(service, target)


async def _gather(calls: list) -> list:
    gate = asyncio.Semaphore(DESCRIBE_CONCURRENCY)

    async def one(call):
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


# --- listing ------------------------------------------------------------------------------------------


async def list_jobs(
    target: aws.AWSTarget,
    services: tuple[str, ...] = SERVICES,
    dispatch: str = "",
    running: bool = False,
    server: str = "",
    created_before: float | None = None,
    details: bool = True,
) -> list[JobRecord]:
    """byoc-executor's jobs (tagged ``byoc:executor``), newest first.

    Args:
        dispatch: only this dispatch's jobs (``byoc:dispatch``).
        running: only jobs that have not ended.
        server: only jobs followed by this server (``byoc:server``).
        created_before: only jobs created before this time (epoch seconds).
        details: describe each job for its start time and billable time (one call per job).

    Raises:
        AWSError: a listing call failed (translated; access denied says which permission).
    """
    found: list[JobRecord] = []
    for service in services:
        lister = _braket_jobs if service == "braket" else _sagemaker_jobs
        found += await lister(target, dispatch, running, created_before)
    wanted = [j for j in found if (not dispatch or j.dispatch == dispatch) and (not server or j.server == server)
              and (not running or j.running)]
    if details:
        await _gather([_add_details(target, j) for j in wanted])
        wanted = [j for j in wanted if not running or j.running]
    wanted.sort(key=lambda j: j.created or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    return wanted


def _record(service: str, job_id: str, name: str, tags: dict[str, str], raw: str, created: Any) -> JobRecord | None:
    if tags.get(TAG_EXECUTOR) != EXECUTOR_TAG_VALUE:
        return None
    table = braket_service.STATES if service == "braket" else sagemaker_service.STATES
    return JobRecord(
        service=service, job_id=job_id, job_name=name, dispatch=tags.get(TAG_DISPATCH, ""), node=tags.get(TAG_NODE, ""),
        server=tags.get(TAG_SERVER, ""), state=map_state(table, raw, service), raw_status=raw, created=_time(created), tags=tags,
    )


async def _braket_jobs(target: aws.AWSTarget, dispatch: str, running: bool, created_before: float | None) -> list[JobRecord]:
    # SearchJobs filters only on jobArn and createdAt (braket/2019-09-01); tags and status are read
    # from each JobSummary. Job ARNs end in a UUID: nothing is derived from them.
    client = await _client("braket", target)
    filters = []
    if created_before is not None:
        filters.append({"name": "createdAt", "operator": "LT", "values": [datetime.fromtimestamp(created_before, timezone.utc).isoformat()]})
    out, token = [], None
    while True:
        request: dict[str, Any] = {"filters": filters, "maxResults": PAGE}
        if token:
            request["nextToken"] = token
        try:
            page = await client.search_jobs(**request)
        except ClientError as e:
            raise_aws_error(e, "SearchJobs")
        for summary in page.get("jobs", []):
            record = _record("braket", summary["jobArn"], summary.get("jobName", ""), summary.get("tags") or {},
                             summary.get("status", ""), summary.get("createdAt"))
            if record is not None:
                record.started, record.ended = _time(summary.get("startedAt")), _time(summary.get("endedAt"))
                out.append(record)
        token = page.get("nextToken")
        if not token:
            return out


def _name_hint(dispatch: str) -> str:
    """The start every job name of ``dispatch`` shares (``cov-<dispatch's first characters>``), to narrow
    ListTrainingJobs by NameContains; the tags decide."""
    return job_name(dispatch, 0).rsplit("-", 2)[0] + "-" if dispatch else NAME_MARK


async def _sagemaker_jobs(target: aws.AWSTarget, dispatch: str, running: bool, created_before: float | None) -> list[JobRecord]:
    client = await _client("sagemaker", target)
    summaries: list[dict] = []
    for status in _RUNNING_SAGEMAKER if running else (None,):
        token = None
        while True:
            request: dict[str, Any] = {"NameContains": _name_hint(dispatch), "MaxResults": PAGE}
            if status:
                request["StatusEquals"] = status
            if created_before is not None:
                request["CreationTimeBefore"] = datetime.fromtimestamp(created_before, timezone.utc)
            if token:
                request["NextToken"] = token
            try:
                page = await client.list_training_jobs(**request)
            except ClientError as e:
                raise_aws_error(e, "ListTrainingJobs")
            summaries += page.get("TrainingJobSummaries", [])
            token = page.get("NextToken")
            if not token:
                break

    async def tagged(summary: dict) -> JobRecord | None:
        tags = await _sagemaker_tags(client, summary["TrainingJobArn"])
        record = _record("sagemaker", summary["TrainingJobName"], summary["TrainingJobName"], tags,
                         summary.get("TrainingJobStatus", ""), summary.get("CreationTime"))
        if record is not None:
            record.ended = _time(summary.get("TrainingEndTime"))
        return record

    return [r for r in await _gather([tagged(s) for s in summaries]) if r is not None]


async def _sagemaker_tags(client: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    token = None
    while True:
        request: dict[str, Any] = {"ResourceArn": arn, "MaxResults": 50}
        if token:
            request["NextToken"] = token
        try:
            page = await client.list_tags(**request)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ValidationException":
                return tags  # deleted between the listing and now
            raise_aws_error(e, "ListTags", arn)
        tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        token = page.get("NextToken")
        if not token:
            return tags


async def _add_details(target: aws.AWSTarget, job: JobRecord) -> None:
    try:
        description, status = await describe(target, job.service, job.job_id)
    except ResourceNotFoundError:
        return
    job.state, job.raw_status = status.state, status.raw_status
    if job.service == "braket":
        job.started, job.ended = _time(description.get("startedAt")), _time(description.get("endedAt"))
        if description.get("billableDuration") is not None:
            job.billable_seconds = description["billableDuration"] / 1000.0
    else:
        job.started, job.ended = _time(description.get("TrainingStartTime")), _time(description.get("TrainingEndTime"))
        if description.get("BillableTimeInSeconds") is not None:
            job.billable_seconds = float(description["BillableTimeInSeconds"])


# --- one job ------------------------------------------------------------------------------------------


async def describe(target: aws.AWSTarget, service: str, job_id: str) -> tuple[dict, JobStatus]:
    """The job's description (the API's answer) and its status in the project's vocabulary.

    Raises:
        ResourceNotFoundError: no such job.
    """
    client = await _client(service, target)
    if service == "braket":
        try:
            answer = await client.get_job(jobArn=job_id)
        except ClientError as e:
            raise_aws_error(e, "GetJob", job_id)
        return answer, braket_service.status_from_job(answer)
    try:
        answer = await client.describe_training_job(TrainingJobName=job_id)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ValidationException":
            raise ResourceNotFoundError("DescribeTrainingJob", "ValidationException", str(e), resource=job_id) from e
        raise_aws_error(e, "DescribeTrainingJob", job_id)
    return answer, sagemaker_service.status_from_training_job(answer)


async def resolve(target: aws.AWSTarget, job: str, service: str = "") -> tuple[str, str]:
    """``(service, job_id)`` for what a user typed: a Braket job ARN, a SageMaker training job's name
    or ARN, or a Braket job's name (matched against ``jobName`` in SearchJobs: a name is never
    derived from an ARN, nor an ARN from a name).

    Raises:
        JobNotFound: no job of that name or id (on the services looked at).
    """
    named = service_of(job)
    if named == "braket":
        return "braket", job
    if named == "sagemaker":
        return "sagemaker", job.rsplit("/", 1)[-1]
    if service in ("", "sagemaker"):
        try:
            await describe(target, "sagemaker", job)
            return "sagemaker", job
        except (ResourceNotFoundError, InvalidRequestError):  # no such name, or not a SageMaker name at all
            if service == "sagemaker":
                raise JobNotFound(f"no SageMaker training job named {job}") from None
    client = await _client("braket", target)
    token = None
    while True:
        request: dict[str, Any] = {"filters": [], "maxResults": PAGE}
        if token:
            request["nextToken"] = token
        try:
            page = await client.search_jobs(**request)
        except ClientError as e:
            raise_aws_error(e, "SearchJobs")
        for summary in page.get("jobs", []):
            if summary.get("jobName") == job:
                return "braket", summary["jobArn"]
        token = page.get("nextToken")
        if not token:
            raise JobNotFound(f"no {'Braket' if service == 'braket' else 'Braket or SageMaker'} job named {job}")


async def cancel(target: aws.AWSTarget, service: str, job_id: str) -> JobStatus:
    """Cancel (Braket) or stop (SageMaker) the job; one that already ended is left alone.

    Returns:
        The job's status after the request.
    """
    client = await _client(service, target)
    jobs = BraketJobs(client) if service == "braket" else SageMakerTrainingJobs(client)
    await jobs.cancel(job_id)
    return (await describe(target, service, job_id))[1]


@dataclass
class Collected:
    """A finished job's outcome, verified."""

    status: JobStatus
    outcome: codec.JobOutcome
    payload_uri: str


def _payload_channel(description: dict, service: str) -> str:
    if service == "braket":
        for channel in description.get("inputDataConfig") or []:
            if channel.get("channelName") == contract.PAYLOAD_CHANNEL:
                return channel["dataSource"]["s3DataSource"]["s3Uri"]
    else:
        for channel in description.get("InputDataConfig") or []:
            if channel.get("ChannelName") == contract.PAYLOAD_CHANNEL:
                return channel["DataSource"]["S3DataSource"]["S3Uri"]
    return ""


async def collect(target: aws.AWSTarget, service: str, job_id: str) -> Collected:
    """Download, verify and unpickle a finished job's outcome (see the module docstring).

    Raises:
        JobNotFinished: the job has not ended.
        ResultError: the job is not one of byoc-executor's protocol-2 jobs, its payload does not match
            the digest its request pinned (replaced after submission), or its result does not verify.
        ResourceNotFoundError: the job, its payload or its results archive is gone.
    """
    description, status = await describe(target, service, job_id)
    if not status.state.terminal:
        raise JobNotFinished(status)
    hyperparameters = description.get("hyperParameters" if service == "braket" else "HyperParameters") or {}
    digest = hyperparameters.get(contract.HP_PAYLOAD_DIGEST, "")
    channel = _payload_channel(description, service)
    if not digest or not channel:
        raise ResultError(f"job {job_id} is not a byoc-executor job of protocol {contract.PROTOCOL_VERSION}: its request "
                          f"has no {contract.HP_PAYLOAD_DIGEST} hyperparameter or no {contract.PAYLOAD_CHANNEL} channel", job_id=job_id)
    payload = storage.S3Location.parse(channel).child(contract.PAYLOAD_FILE)
    s3 = await _client("s3", target)
    key = await _result_key(s3, payload, digest, job_id)
    archive_uri = status.results_uri
    try:
        archive = await _download(s3, storage.S3Location.parse(archive_uri))
    except ResourceNotFoundError:
        return Collected(status, codec.JobOutcome(ok=False, has_result=False), payload.uri)
    try:
        outcome = await asyncio.to_thread(codec.read_results_archive, archive, key)
    finally:
        if isinstance(archive, str):
            await asyncio.to_thread(os.unlink, archive)
    return Collected(status, outcome, payload.uri)


async def _download(s3: Any, where: storage.S3Location) -> bytes | str:
    def spill() -> str:
        fd, path = tempfile.mkstemp(prefix="byoc-rescue-")
        os.close(fd)
        return path

    return await storage.download(s3, where, spill)


async def _result_key(s3: Any, payload: storage.S3Location, digest: str, job_id: str) -> str:
    """The result key in the payload's header, once the payload matches the digest the job's request pinned."""
    body = await _download(s3, payload)

    def read() -> str:
        with (io.BytesIO(body) if isinstance(body, bytes) else open(body, "rb")) as f:
            return contract.open_envelope(f, "payload", expected_header_digest=digest)[contract.RESULT_KEY_FIELD]

    try:
        return await asyncio.to_thread(read)
    except (contract.ContractError, KeyError) as e:
        raise ResultError(
            f"the payload of job {job_id} at {payload.uri} cannot be trusted, so neither can the result key in it: {e}",
            job_id=job_id,
        ) from e
    finally:
        if isinstance(body, str):
            await asyncio.to_thread(os.unlink, body)
