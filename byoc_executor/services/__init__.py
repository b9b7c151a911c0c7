"""One job contract for two AWS job APIs.

A job service submits a request dict, describes a job as a ``JobStatus`` in the project's one
state vocabulary (``JobState``), and cancels. The request dicts are built by pure functions in
``braket.py`` and ``sagemaker.py``; uploading happens before, in its own step.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from byoc_executor.container import byoc_entry as contract
from byoc_executor.settings import Settings
from byoc_executor.storage import S3Location

log = logging.getLogger(__name__)


class JobState(enum.Enum):
    QUEUED = "QUEUED"
    """Accepted; waiting for capacity (an instance, or QPU priority). Nothing is billed yet."""
    RUNNING = "RUNNING"
    """The instance is up: downloading inputs, running the task, or uploading outputs."""
    COMPLETED = "COMPLETED"
    """The container exited 0 and its outputs were uploaded."""
    FAILED = "FAILED"
    """The container exited non-zero, could not start, or hit the maximum runtime."""
    CANCELLING = "CANCELLING"
    """A cancel or stop was requested; the service is tearing the job down."""
    CANCELLED = "CANCELLED"
    """The job was cancelled or stopped before it finished."""
    UNKNOWN = "UNKNOWN"
    """The service reported a status this package does not know; treated as still running."""

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


def map_state(table: dict[str, JobState], status: str, service: str) -> JobState:
    """Translate a service's status string; an unknown one is UNKNOWN, with a warning, never a guess."""
    state = table.get(status)
    if state is None:
        log.warning("%s reported an unknown job status %r; treating it as UNKNOWN", service, status)
        return JobState.UNKNOWN
    return state


@dataclass
class JobStatus:
    """One description of a job, in the project's vocabulary."""

    job_id: str
    state: JobState
    raw_status: str
    detail: str = ""
    failure_reason: str = ""
    results_uri: str = ""
    log_group: str = ""
    log_stream_prefix: str = ""
    progress: list[str] = field(default_factory=list)
    queue_position: str = ""
    """Braket: the job's place in its queue while it waits (``queueInfo.position``, e.g. "3" or ">15")."""


# The tags byoc-executor puts on what it creates (settings.BYOC_OBJECT_TAGS / BYOC_JOB_TAGS count them):
# they say which dispatch and node a job or object is for, so that ``byoc-executor jobs`` finds them
# after the Covalent server is gone.
TAG_DISPATCH = "byoc:dispatch"
TAG_NODE = "byoc:node"
TAG_EXECUTOR = "byoc:executor"
TAG_SERVER = "byoc:server"  # jobs only: the Covalent server that follows the job
EXECUTOR_TAG_VALUE = "byoc-executor"


@dataclass
class StagedTask:
    """Where one electron's artifacts live, decided before anything is uploaded."""

    job_name: str
    client_token: str
    base: S3Location
    task_hyperparameters: dict[str, str] = field(repr=False)
    """From ``EncodedTask.hyperparameters()``: how the job verifies the payload and signs the result."""
    job_tags: dict[str, str] = field(default_factory=dict)
    """The job's tags: the user's and byoc-executor's."""
    object_tags: dict[str, str] = field(default_factory=dict)
    """The tags of every S3 object the task uploads (S3 allows 10)."""

    @property
    def dispatch_prefix(self) -> str:
        """The key prefix shared by every electron of this one's dispatch (``<s3_prefix>/<dispatch>/``)."""
        return self.base.key.rsplit("/", 1)[0] + "/" if "/" in self.base.key else ""

    @property
    def payload_prefix(self) -> S3Location:
        return self.base.child("payload/")

    @property
    def payload(self) -> S3Location:
        return self.base.child(f"payload/{contract.PAYLOAD_FILE}")

    @property
    def source(self) -> S3Location:
        return self.base.child(f"source/{contract.SOURCE_ARCHIVE}")

    @property
    def output(self) -> S3Location:
        return self.base.child("output")


def job_name(dispatch_id: str, node_id: int | str) -> str:
    """A job name for one electron: readable, at most 50 characters, never the same for two electrons.

    It fits both APIs' pattern ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,N}`` (Braket allows 50 characters,
    SageMaker 63). The digest of the full dispatch id and node id keeps it unique; the readable
    part (a dispatch prefix and the node id) is cut first when space runs out.
    """
    digest = hashlib.sha256(f"{dispatch_id}:{node_id}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^a-zA-Z0-9]+", "-", f"{str(dispatch_id)[:8]}-n{node_id}").strip("-")
    room = 50 - len("cov--") - len(digest)
    readable = readable[:room].strip("-")
    return f"cov-{readable}-{digest}" if readable else f"cov-{digest}"


def client_token(dispatch_id: str, node_id: int | str) -> str:
    """An idempotency token: the same electron always sends the same token."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"byoc-executor:{dispatch_id}:{node_id}"))


def stage(
    settings: Settings, dispatch_id: str, node_id: int | str, task_hyperparameters: dict[str, str], server: str = ""
) -> StagedTask:
    """Decide the electron's job name, token, S3 locations and tags (pure: nothing is sent).

    Args:
        server: the identity of the Covalent server that follows the job (``byoc:server`` tag).
    """
    prefix = "/".join(p for p in (settings.s3_prefix.strip("/"), str(dispatch_id), f"node-{node_id}") if p)
    ours = {TAG_DISPATCH: str(dispatch_id), TAG_NODE: str(node_id), TAG_EXECUTOR: EXECUTOR_TAG_VALUE}
    job_tags = {**settings.tags, **ours}
    if server:
        job_tags[TAG_SERVER] = server
    return StagedTask(
        job_name=job_name(dispatch_id, node_id),
        client_token=client_token(dispatch_id, node_id),
        base=S3Location(settings.s3_bucket_name, prefix),
        task_hyperparameters=dict(task_hyperparameters),
        job_tags=job_tags,
        object_tags={**(settings.tags if settings.tag_objects else {}), **ours},
    )


def hyperparameters(staged: StagedTask) -> dict[str, str]:
    """What every job tells the runner (all values strings, as both APIs require)."""
    return dict(staged.task_hyperparameters)


class JobService(Protocol):
    """A job API: submit a request, describe a job, cancel it."""

    name: str
    log_group: str
    """The CloudWatch group its jobs log to, in streams named ``<job name>/...``."""

    async def submit(self, request: dict[str, Any]) -> str:
        """Create the job; returns its id (ARN or name). Adopts an identical job already created."""

    async def describe(self, job_id: str) -> JobStatus:
        """The job's current status."""

    async def cancel(self, job_id: str) -> None:
        """Ask the service to cancel or stop the job; a job already ended is left alone.

        Raises:
            ResourceNotFoundError: no such job.
        """

    def log_stream_prefix(self, job_id: str, job_name: str) -> str:
        """The prefix of the job's CloudWatch log streams in ``log_group``."""
