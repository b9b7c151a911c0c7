"""One emulated job's life, common to Braket hybrid jobs and SageMaker training jobs.

A :class:`JobRun` owns a thread that walks the phases every real job walks::

    QUEUED -> STARTING -> DOWNLOADING -> RUNNING -> UPLOADING -> ended
                                         (process)   (model.tar.gz)

and ends in one :class:`Ending`. The service subclasses (``hybrid_jobs.py``,
``training_jobs.py``) translate phases and endings into their own status vocabulary and
describe the job in their API's shapes; this module knows neither vocabulary, and it starts
the job's process only through a :class:`~byoc_executor.local.launchers.Launcher`.

Each job lives in ``<root>/<jobName>/``: ``opt/ml`` (``BYOC_ML_ROOT``) and, for Braket,
``opt/braket``. Phase delays come from :class:`Timing` so tests stay fast.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from byoc_executor.container import byoc_entry
from byoc_executor.local.launchers import Launcher, LaunchSpec, RunningJob
from byoc_executor.local.logs import LogShipper, Tail, pump_lines
from byoc_executor.local.staging import (
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    AwsClients,
    StagingError,
    download_prefix,
    upload_results,
    write_json,
)

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
HOST_NAME = "algo-1"
# Variables of the emulator's own environment that a job's Python may need to start at all.
_PASS_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "LD_LIBRARY_PATH", "TZ")


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
    """How long the emulator dawdles, and how patient it is when killing.

    Attributes:
        phase_delay: seconds spent in each of QUEUED, STARTING, DOWNLOADING and UPLOADING.
        kill_grace: seconds between SIGTERM and SIGKILL when a job is stopped.
        log_flush_interval: seconds between CloudWatch Logs batches.
    """

    phase_delay: float = 0.1
    kill_grace: float = 2.0
    log_flush_interval: float = 0.2


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


def describe_exit(code: int) -> str:
    """``"code 1"``, or ``"code -9 (killed by SIGKILL)"`` for a signal."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"code {code} (killed by {name})"
    return f"code {code}"


class JobRun:
    """The lifecycle of one job; subclasses supply the service's contract and vocabulary."""

    service: ClassVar[str]
    log_group: ClassVar[str]

    def __init__(self, *, name: str, arn: str, region: str, request: dict, tree: Path, context: JobContext):
        self.name = name
        self.arn = arn
        self.region = region
        self.request = request
        self.tree = tree
        self.ml_root = tree / "opt" / "ml"
        self.context = context
        self.created_at = now()
        self.phase = Phase.QUEUED
        self.ending: Ending | None = None
        self.failure_reason: str | None = None
        self.pid: int | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.artifacts_uploaded = False
        self.lock = threading.RLock()
        self._stop_requested = False
        self._abandoned = False
        self._process: RunningJob | None = None
        self._exit_code: int | None = None
        self._wake = threading.Event()
        self._exited = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-{name}", daemon=True)

    # --- what a service subclass supplies ------------------------------------------------------

    def channels(self) -> dict[str, str]:
        """Input channel name -> S3 prefix URI."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, str]:
        """The hyperparameters file's contents."""
        raise NotImplementedError

    def contract_env(self) -> dict[str, str]:
        """Service-specific environment variables (Braket's ``AMZN_BRAKET_*``, SageMaker's user ``Environment``)."""
        raise NotImplementedError

    def results_dir(self) -> Path:
        """The directory the service tars to S3."""
        raise NotImplementedError

    def artifact_uri(self) -> str:
        """Where ``model.tar.gz`` goes."""
        raise NotImplementedError

    def max_runtime(self) -> int:
        """The stopping condition, in seconds."""
        raise NotImplementedError

    def instance_type(self) -> str:
        """The requested instance type (for resourceconfig.json)."""
        raise NotImplementedError

    def uploads_on(self, ending: Ending) -> bool:
        """Whether the service uploads the results dir when the job ends this way."""
        raise NotImplementedError

    def on_phase(self, phase: Phase) -> None:
        """Record entering ``phase`` in the service's vocabulary (called under ``lock``)."""
        raise NotImplementedError

    def on_stop_requested(self) -> None:
        """Record a cancel/stop request (called under ``lock``)."""
        raise NotImplementedError

    def on_end(self, ending: Ending, reason: str | None) -> None:
        """Record the terminal state (called under ``lock``)."""
        raise NotImplementedError

    # --- control --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lifecycle thread."""
        self._thread.start()

    @property
    def ended(self) -> bool:
        """Whether the job reached a terminal state."""
        return self.phase is Phase.ENDED

    def request_stop(self) -> None:
        """Cancel/stop: SIGTERM the job, SIGKILL after the grace period; it ends STOPPED."""
        with self.lock:
            if self.ended or self._stop_requested:
                return
            self._stop_requested = True
            self.on_stop_requested()
        self._wake.set()

    def kill(self) -> bool:
        """SIGKILL the job's processes as if the container died. Returns False if none is running."""
        with self.lock:
            process = self._process if self.phase is Phase.RUNNING and not self._exited.is_set() else None
        if process is None:
            return False
        process.signal(signal.SIGKILL)
        return True

    def abandon(self) -> None:
        """The emulator is shutting down: kill the job now and skip the upload."""
        with self.lock:
            self._abandoned = True
            process = self._process
        if process is not None:
            process.signal(signal.SIGKILL)
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the lifecycle thread."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the lifecycle -----------------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        with self.lock:
            self.phase = phase
            if phase is Phase.DOWNLOADING:
                self.started_at = now()
            self.on_phase(phase)

    def _end(self, ending: Ending, reason: str | None = None) -> None:
        with self.lock:
            if reason is not None:
                reason = reason[: byoc_entry.FAILURE_REASON_LIMIT]
            self.ending, self.failure_reason = ending, reason
            self.ended_at = now()
            self.phase = Phase.ENDED
            self.on_end(ending, reason)

    def _interrupted(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless a stop arrives; True if the job should stop now."""
        self._wake.wait(seconds)
        return self._stop_requested or self._abandoned

    def _run(self) -> None:
        try:
            self._lifecycle()
        except Exception as e:  # a bug here must not leave a job "in progress" forever
            logger.exception("emulated job %s crashed", self.name)
            if self.process_alive():
                self._process.signal(signal.SIGKILL)  # type: ignore[union-attr]
            self._end(Ending.FAILED, f"InternalServerError: the emulator failed running the job: {type(e).__name__}: {e}")

    def process_alive(self) -> bool:
        """Whether the job's process was started and has not exited."""
        return self._process is not None and not self._exited.is_set()

    def _lifecycle(self) -> None:
        delay = self.context.timing.phase_delay
        if self._interrupted(delay):
            return self._end(Ending.STOPPED)
        self._enter(Phase.STARTING)
        if self._interrupted(delay):
            return self._end(Ending.STOPPED)
        self._enter(Phase.DOWNLOADING)
        if self.context.hooks is not None:
            self.context.hooks.before_download(self)
        try:
            self._stage_inputs()
        except StagingError as e:
            return self._end(Ending.FAILED, str(e))
        if self._interrupted(delay):
            return self._end(Ending.STOPPED)
        self._enter(Phase.RUNNING)
        ending, reason = self._run_process()
        if self._abandoned:
            return self._end(Ending.FAILED, "InternalServerError: the emulator was shut down while the job ran")
        if self.uploads_on(ending):
            self._enter(Phase.UPLOADING)
            self._interrupted(delay)
            try:
                # Uploaded on failure too: the result envelope carries the task's exception and
                # traceback, which the client reports better than the one-line failure reason.
                upload_results(
                    self.context.clients.client("s3", self.region),
                    self.results_dir(),
                    self.artifact_uri(),
                    self.tree / "upload",
                )
                self.artifacts_uploaded = True
                if self.context.hooks is not None:
                    self.context.hooks.after_upload(self)
            except StagingError as e:
                if ending is Ending.COMPLETED:
                    ending, reason = Ending.FAILED, str(e)
        self._end(ending, reason)

    def _stage_inputs(self) -> None:
        s3 = self.context.clients.client("s3", self.region)
        for channel, uri in self.channels().items():
            download_prefix(s3, uri, self.ml_root / "input" / "data" / channel)
        config = self.ml_root / "input" / "config"
        write_json(config / "hyperparameters.json", self.hyperparameters())
        write_json(
            config / "resourceconfig.json",
            {
                "current_host": HOST_NAME,
                "hosts": [HOST_NAME],
                "current_group_name": "homogeneousCluster",
                "current_instance_type": self.instance_type(),
                "instance_groups": [
                    {"instance_group_name": "homogeneousCluster", "instance_type": self.instance_type(), "hosts": [HOST_NAME]}
                ],
                "network_interface_name": "eth0",
            },
        )
        write_json(
            config / "inputdataconfig.json",
            {
                name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
                for name in self.channels()
            },
        )
        for directory in (self.ml_root / "model", self.ml_root / "output", self.results_dir()):
            directory.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        """The job's complete environment: a minimal base, the service contract, the emulator's AWS."""
        env = {key: os.environ[key] for key in _PASS_THROUGH_ENV if key in os.environ}
        env.setdefault("LANG", "C.UTF-8")
        home = self.tree / "home"
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)  # a container's own home: never the developer's ~/.aws
        tmp = self.tree / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)  # the job's scratch files stay in its tree, like a container's /tmp
        env["PYTHONUNBUFFERED"] = "1"  # lines reach the logs as they are printed
        env.update(self.contract_env())
        env.update(
            {
                byoc_entry.ENV_ML_ROOT: str(self.ml_root),
                "AWS_ENDPOINT_URL": self.context.endpoint_url,
                "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        return env

    def launch_spec(self) -> LaunchSpec:
        """The command of the image (``docker run IMAGE train``) as run by the launcher."""
        return LaunchSpec(
            job_name=self.name,
            service=self.service,
            command=[sys.executable, byoc_entry.__file__, "train"],
            env=self.environment(),
            tree=self.tree,
        )

    def _run_process(self) -> tuple[Ending, str | None]:
        started = now()
        stream = f"{self.name}/{HOST_NAME}-{int(started)}"
        shipper = LogShipper(
            self.context.clients.client("logs", self.region), self.log_group, stream,
            self.context.timing.log_flush_interval,
        )
        tail = Tail()
        shipper.start()
        try:
            process = self.context.launcher.launch(self.launch_spec())
        except OSError as e:
            shipper.close()
            return Ending.FAILED, f"AlgorithmError: the job's process could not start: {e}"
        with self.lock:
            self._process, self.pid = process, process.pid
        pumps = [pump_lines(s, [shipper.put, tail]) for s in (process.stdout, process.stderr)]
        threading.Thread(target=self._reap, args=(process,), name=f"reap-{self.name}", daemon=True).start()

        deadline = time.monotonic() + self.max_runtime()
        timed_out = False
        while not self._exited.is_set():
            if self._stop_requested or self._abandoned:
                self._terminate(process)
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                self._terminate(process)
                break
            self._wake.wait(remaining)
            self._wake.clear()
        self._exited.wait()
        for pump in pumps:
            pump.join()
        shipper.close()  # every line is in CloudWatch before the job reports a terminal state
        return self._judge(self._exit_code, timed_out, tail)

    def _reap(self, process: RunningJob) -> None:
        self._exit_code = process.wait()
        self._exited.set()
        self._wake.set()

    def _terminate(self, process: RunningJob) -> None:
        """SIGTERM, then SIGKILL after the grace period (how both services stop containers)."""
        process.signal(signal.SIGTERM)
        if not self._exited.wait(self.context.timing.kill_grace):
            process.signal(signal.SIGKILL)

    def _judge(self, code: int | None, timed_out: bool, tail: Tail) -> tuple[Ending, str | None]:
        if self._stop_requested:
            return Ending.STOPPED, None
        if timed_out:
            return Ending.MAX_RUNTIME, None
        if code == 0:
            return Ending.COMPLETED, None
        failure_file = self.ml_root / "output" / "failure"
        if failure_file.is_file():
            text = failure_file.read_text(errors="replace")[: byoc_entry.FAILURE_REASON_LIMIT]
            if text.strip():
                return Ending.FAILED, text
        reason = f"AlgorithmError: the job's process exited with {describe_exit(code if code is not None else -1)}"
        lines = tail.lines()
        if lines:
            reason += ". Last log lines: " + " | ".join(lines)
        return Ending.FAILED, reason

    def admin_view(self) -> dict[str, Any]:
        """The admin surface's view: name, service, status, pid."""
        raise NotImplementedError
