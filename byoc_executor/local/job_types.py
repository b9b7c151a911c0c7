"""The vocabulary of an emulated job's life: phases, endings, timing, hooks, API errors.

Shared by ``jobs.py`` (which re-exports every name) and the service modules.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Protocol

from byoc_executor.local.launchers import Launcher
from byoc_executor.local.staging import AwsClients

if TYPE_CHECKING:
    from byoc_executor.local.jobs import JobRun


class Phase(enum.Enum):
    """Where a job is in its life; services map these to their own statuses."""

    QUEUED = "queued"
    """Accepted, waiting for capacity."""
    STARTING = "starting"
    """The instance (here: the job tree) is being prepared."""
    DOWNLOADING = "downloading"
    """Input channels are being copied in and the config files written."""
    RUNNING = "running"
    """The entry script is running."""
    UPLOADING = "uploading"
    """The results directory is being tarred to S3."""
    ENDED = "ended"
    """Terminal; see the job's :class:`Ending`."""


class Ending(enum.Enum):
    """How a job ended."""

    COMPLETED = "completed"
    """The process exited 0 and the artifacts were uploaded."""
    FAILED = "failed"
    """The process exited non-zero or was killed, or setup or upload failed."""
    STOPPED = "stopped"
    """A user asked to cancel (Braket) or stop (SageMaker) the job."""
    MAX_RUNTIME = "max_runtime"
    """The job ran past its stopping condition and was killed."""


@dataclass(frozen=True)
class Timing:
    """How long the emulator dawdles, how patient it is when killing, and how much it allows.

    The defaults keep tests fast: every phase takes ``phase_delay``, lines are readable at once,
    nothing is limited. An AWS profile (``aws_profile.py``) fills in the rest, in wall seconds.

    Attributes:
        phase_delay: seconds spent in each of QUEUED, STARTING, DOWNLOADING and UPLOADING.
        kill_grace: seconds between SIGTERM and SIGKILL when a job is stopped.
        log_flush_interval: seconds between CloudWatch Logs batches.
        phases: per service, the seconds of ``queued``, ``starting``, ``warm_starting``,
            ``downloading`` and ``uploading`` (None: ``phase_delay`` each, 0 for a warm start).
        log_lag: seconds before a written log line can be read.
        not_found_window: seconds after a create during which the job is not found.
        instance_quota: instances of one type that one service's jobs may run at once (None: any).
        time_scale: AWS seconds per wall second (what the usage report multiplies by).
    """

    phase_delay: float = 0.1
    kill_grace: float = 2.0
    log_flush_interval: float = 0.2
    phases: Mapping[str, Mapping[str, float]] | None = None
    log_lag: float = 0.0
    not_found_window: float = 0.0
    instance_quota: int | None = None
    time_scale: float = 1.0

    def delay(self, service: str, phase: str, warm: bool = False) -> float:
        """Seconds a job of ``service`` spends in ``phase`` (queued, starting, downloading, uploading)."""
        if phase == "starting" and warm:
            phase = "warm_starting"
        if self.phases is None:
            return 0.0 if phase == "warm_starting" else self.phase_delay
        return self.phases[service][phase]


class JobHooks(Protocol):
    """Called by every job at two points of its life (fault injection: ``faults.JobFaults``)."""

    def before_download(self, job: "JobRun") -> None:
        """Just before the job copies its input channels from S3."""

    def after_upload(self, job: "JobRun") -> None:
        """Right after the job uploaded ``model.tar.gz``, before it reports a terminal state."""


@dataclass(frozen=True)
class JobContext:
    """What every job needs from the emulator that runs it."""

    endpoint_url: str
    clients: AwsClients
    launcher: Launcher
    timing: Timing
    hooks: JobHooks | None = None


class ApiError(Exception):
    """An AWS error answer: the server renders it in the service's wire format.

    Attributes:
        code: the AWS error code, e.g. ``ConflictException``.
        status: the HTTP status.
    """

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def now() -> float:
    """Wall-clock seconds since the epoch (what the APIs report)."""
    return time.time()
