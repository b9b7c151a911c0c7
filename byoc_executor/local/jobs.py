"""One emulated job's life, common to Braket hybrid jobs and SageMaker training jobs.

A :class:`JobRun` owns a thread that walks the phases every real job walks::

    QUEUED -> STARTING -> DOWNLOADING -> RUNNING -> UPLOADING -> ended
                 ^       (+checkpoints)  (processes) (model.tar.gz)
                 '--- spot interruption <---'

and ends in one :class:`Ending`. The service subclasses (``hybrid_jobs.py``,
``training_jobs.py``) translate phases and endings into their own status vocabulary and
describe the job in their API's shapes; this module knows neither vocabulary, and it starts
the job's processes (one per host, ``hosts.py``) only through a
:class:`~byoc_executor.local.launchers.Launcher`.

Each job lives in ``<root>/<jobName>/``: ``opt/ml`` (``BYOC_ML_ROOT``) and, for Braket,
``opt/braket``; hosts after the first in ``<root>/<jobName>/hosts/algo-<i>/``. Phase delays
come from :class:`Timing` so tests stay fast.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from byoc_executor.local import sagemaker_contract
from byoc_executor.local.hosts import LEADER, HostProcess, first_failure, host_names, resource_config, terminate
from byoc_executor.local.job_types import ApiError, Ending, JobContext, JobHooks, Phase, Timing, now
from byoc_executor.local.launchers import Launcher, LaunchSpec
from byoc_executor.local.logs import LogShipper
from byoc_executor.local.staging import (
    DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, StagingError, download_prefix, upload_results, upload_tree, write_json,
)

__all__ = ["ACCOUNT_ID", "ApiError", "Ending", "JobContext", "JobHooks", "JobRun", "Phase", "Timing", "now"]

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
# Variables of the emulator's own environment that a job's Python may need to start at all.
_PASS_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "LD_LIBRARY_PATH", "TZ")


class JobRun:
    """The lifecycle of one job; subclasses supply the service's contract and vocabulary."""

    service: ClassVar[str]
    log_group: ClassVar[str]
    failure_reason_limit: ClassVar[int] = sagemaker_contract.FAILURE_REASON_LIMIT

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
        self.end_seen_at: float | None = None
        """When a client's Get/Describe first answered the job's terminal status (the usage report's
        measure of how late a follower learns of the end)."""
        self.warm_start = False
        """True when the job reuses a warm pool: no instance to provision, so no Starting delay."""
        self.attempts = 0
        """How many times the job's processes were started (a spot interruption restarts them)."""
        self.lock = threading.RLock()
        self._stop_requested = False
        self._abandoned = False
        self._interrupt_pending = False
        self._hosts: list[HostProcess] = []
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-{name}", daemon=True)

    # --- what a service subclass supplies ------------------------------------------------------

    def channels(self) -> dict[str, str]:
        """Input channel name -> S3 prefix URI."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, str]:
        """The hyperparameters file's contents."""
        raise NotImplementedError

    def contract_env(self, tree: Path) -> dict[str, str]:
        """Service-specific environment variables of the host whose tree is ``tree``."""
        raise NotImplementedError

    def results_dir(self, tree: Path | None = None) -> Path:
        """The directory the service tars to S3, in ``tree`` (the leader's by default)."""
        raise NotImplementedError

    def checkpoint_uri(self) -> str | None:
        """The checkpoint S3 prefix, if the job has one."""
        raise NotImplementedError

    def checkpoint_dir(self, tree: Path) -> Path:
        """The local checkpoint directory in ``tree``."""
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

    def instance_count(self) -> int:
        """How many instances (hosts) the job runs on."""
        raise NotImplementedError

    def network_isolated(self) -> bool:
        """Whether the job's containers have no network (SageMaker's EnableNetworkIsolation)."""
        return False

    def interruptible(self) -> bool:
        """Whether the job runs on spot capacity, and so can be interrupted and restarted."""
        return False

    def uploads_on(self, ending: Ending) -> bool:
        """Whether the service uploads the results dir when the job ends this way."""
        raise NotImplementedError

    def on_phase(self, phase: Phase) -> None:
        """Record entering ``phase`` in the service's vocabulary (called under ``lock``)."""
        raise NotImplementedError

    def on_interrupted(self) -> None:
        """Record a spot interruption, before the job restarts (called under ``lock``)."""

    def on_stop_requested(self) -> None:
        """Record a cancel/stop request (called under ``lock``)."""
        raise NotImplementedError

    def on_end(self, ending: Ending, reason: str | None) -> None:
        """Record the terminal state (called under ``lock``)."""
        raise NotImplementedError

    # --- hosts ----------------------------------------------------------------------------------

    def hosts(self) -> list[str]:
        """``algo-1`` .. ``algo-<instance count>``."""
        return host_names(self.instance_count())

    def host_tree(self, host: str) -> Path:
        """The tree of ``host``: the job's own for the leader, ``<tree>/hosts/<host>`` for the others."""
        return self.tree if host == LEADER else self.tree / "hosts" / host

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

    def _live_hosts(self) -> list[HostProcess]:
        with self.lock:
            if self.phase is not Phase.RUNNING:
                return []
            return [h for h in self._hosts if h.alive()]

    def kill(self) -> bool:
        """SIGKILL the job's processes as if the containers died. Returns False if none is running."""
        hosts = self._live_hosts()
        for host in hosts:
            host.signal(signal.SIGKILL)
        return bool(hosts)

    def interrupt(self) -> bool:
        """A spot interruption: kill the processes now; the job restarts and runs again.

        Returns:
            False if the job is not a spot job or has no running process.
        """
        if not self.interruptible():
            return False
        with self.lock:
            hosts = self._live_hosts()
            if not hosts or self._stop_requested:
                return False
            self._interrupt_pending = True
        for host in hosts:
            host.signal(signal.SIGKILL)
        self._wake.set()
        return True

    def abandon(self) -> None:
        """The emulator is shutting down: kill the job now and skip the upload."""
        with self.lock:
            self._abandoned = True
            hosts = list(self._hosts)
        for host in hosts:
            host.signal(signal.SIGKILL)
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the lifecycle thread."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the lifecycle -----------------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        with self.lock:
            self.phase = phase
            if phase is Phase.DOWNLOADING and self.started_at is None:
                self.started_at = now()
            self.on_phase(phase)

    def _end(self, ending: Ending, reason: str | None = None) -> None:
        with self.lock:
            if reason is not None:
                reason = reason[: self.failure_reason_limit]
            self.ending, self.failure_reason = ending, reason
            self.ended_at = now()
            self.phase = Phase.ENDED
            self.on_end(ending, reason)

    def _interrupted(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless a stop arrives; True if the job should stop now."""
        if not (self._stop_requested or self._abandoned):
            self._wake.clear()
        if seconds > 0:
            self._wake.wait(seconds)
        return self._stop_requested or self._abandoned

    def _run(self) -> None:
        try:
            self._lifecycle()
        except Exception as e:  # a bug here must not leave a job "in progress" forever
            logger.exception("emulated job %s crashed", self.name)
            for host in list(self._hosts):
                host.signal(signal.SIGKILL)
            self._end(Ending.FAILED, f"InternalServerError: the emulator failed running the job: {type(e).__name__}: {e}")

    def process_alive(self) -> bool:
        """Whether any of the job's processes was started and has not exited."""
        return any(h.alive() for h in self._hosts)

    def _lifecycle(self) -> None:
        timing = self.context.timing

        def delay(phase: str) -> float:
            return timing.delay(self.service, phase, warm=self.warm_start)

        if self._interrupted(delay("queued")):
            return self._end(Ending.STOPPED)
        # MaxRuntimeInSeconds counts every attempt's run time (AWS seconds, played at the time scale).
        budget = float(self.max_runtime()) / timing.time_scale
        while True:
            self._enter(Phase.STARTING)
            # A warm pool's instances are already provisioned: little or nothing to wait for.
            if self._interrupted(delay("starting")):
                return self._end(Ending.STOPPED)
            self._enter(Phase.DOWNLOADING)
            if self.context.hooks is not None:
                self.context.hooks.before_download(self)
            try:
                self._stage_inputs()
            except StagingError as e:
                return self._end(Ending.FAILED, str(e))
            if self._interrupted(delay("downloading")):
                return self._end(Ending.STOPPED)
            self._enter(Phase.RUNNING)
            began = time.monotonic()
            ending, reason = self._run_hosts(budget)
            budget -= time.monotonic() - began
            if self._abandoned:
                return self._end(Ending.FAILED, "InternalServerError: the emulator was shut down while the job ran")
            checkpoint_error = self._save_checkpoints()
            with self.lock:
                restart = self._interrupt_pending and not self._stop_requested
                self._interrupt_pending = False
                if restart:
                    self.on_interrupted()
            if not restart:
                break
            if self._interrupted(delay("starting")):
                return self._end(Ending.STOPPED)
        if checkpoint_error is not None and ending is Ending.COMPLETED:
            ending, reason = Ending.FAILED, checkpoint_error
        if self.uploads_on(ending):
            self._enter(Phase.UPLOADING)
            self._interrupted(delay("uploading"))
            try:
                # Uploaded on failure too: the result envelope carries the task's exception and
                # traceback, which the client reports better than the one-line failure reason.
                # With several hosts, SageMaker aggregates every host's /opt/ml/model into the one
                # model.tar.gz ("If multiple containers in a single training job write to this
                # directory they should ensure no file/directory names clash", in "How Amazon
                # SageMaker Processes Training Output"); on a clash the leader's file is kept here.
                upload_results(
                    self.context.clients.client("s3", self.region),
                    [self.results_dir(self.host_tree(h)) for h in reversed(self.hosts())],
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
        hosts = self.hosts()
        checkpoints = self.checkpoint_uri()
        for host in hosts:
            tree = self.host_tree(host)
            ml_root = tree / "opt" / "ml"
            for channel, uri in self.channels().items():
                download_prefix(s3, uri, ml_root / "input" / "data" / channel)
            if checkpoints:
                # Before the process starts, the checkpoint prefix is copied into the local path
                # (the first run finds none; a restarted or later job finds the last ones).
                download_prefix(s3, checkpoints.rstrip("/") + "/", self.checkpoint_dir(tree), allow_empty=True)
            config = ml_root / "input" / "config"
            write_json(config / "hyperparameters.json", self.hyperparameters())
            write_json(config / "resourceconfig.json", resource_config(host, hosts, self.instance_type()))
            write_json(
                config / "inputdataconfig.json",
                {
                    name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
                    for name in self.channels()
                },
            )
            for directory in (ml_root / "model", ml_root / "output", self.results_dir(tree)):
                directory.mkdir(parents=True, exist_ok=True)

    def _save_checkpoints(self) -> str | None:
        """Upload every host's checkpoint files to the prefix (leader last: its files win).

        Real jobs sync the local path to S3 while they run; uploading once the processes ended
        (success, failure, stop or interruption) leaves S3 in the same state for the next run.

        Returns:
            The failure reason if an upload failed, else None.
        """
        uri = self.checkpoint_uri()
        if not uri:
            return None
        s3 = self.context.clients.client("s3", self.region)
        try:
            for host in reversed(self.hosts()):
                upload_tree(s3, self.checkpoint_dir(self.host_tree(host)), uri)
        except StagingError as e:
            return str(e)
        return None

    def environment(self, host: str = LEADER) -> dict[str, str]:
        """A host's complete environment: a minimal base, the service contract, the emulator's AWS."""
        tree = self.host_tree(host)
        env = {key: os.environ[key] for key in _PASS_THROUGH_ENV if key in os.environ}
        env.setdefault("LANG", "C.UTF-8")
        home = tree / "home"
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)  # a container's own home: never the developer's ~/.aws
        tmp = tree / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)  # the job's scratch files stay in its tree, like a container's /tmp
        env["PYTHONUNBUFFERED"] = "1"  # lines reach the logs as they are printed
        env.update(self.contract_env(tree))
        env[sagemaker_contract.BASE_DIR_ENV] = str(tree / "opt" / "ml")
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        if self.network_isolated():
            # EnableNetworkIsolation: the real container has no network at all, so it can reach
            # neither AWS nor the emulator. It gets no endpoint and no credentials; a task that
            # calls AWS fails as it would on SageMaker. (A container launcher still shares the
            # host's network; only the variables are withheld.)
            return env
        env.update(
            {
                "AWS_ENDPOINT_URL": self.context.endpoint_url,
                "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
            }
        )
        return env

    def image(self) -> str | None:
        """The job's own image URI, if it names one."""
        return None

    def job_launcher(self) -> Launcher:
        """What starts this job's processes: the emulator's launcher, unless the service runs it otherwise."""
        return self.context.launcher

    def command(self) -> list[str]:
        """What the job's container runs: the image's ``train`` (``docker run IMAGE train``)."""
        return list(getattr(self.job_launcher(), "train_command", None) or [sagemaker_contract.TRAIN_COMMAND])

    def log_stream_prefix(self) -> str:
        """Streams are ``<prefix>/<host>-<epoch>``; the job's name unless the service says otherwise."""
        return self.name

    def host_failure(self, host: HostProcess, several: bool) -> str:
        """The failure reason of a failed host, in the service's form."""
        return host.failure_reason(several, self.failure_reason_limit)

    def launch_spec(self, host: str = LEADER) -> LaunchSpec:
        """The command of the image (``docker run IMAGE train``) on ``host``, as run by the launcher."""
        return LaunchSpec(
            job_name=self.name if host == LEADER else f"{self.name}-{host}",
            service=self.service,
            command=self.command(),
            env=self.environment(host),
            tree=self.host_tree(host),
            image=self.image(),
        )

    def _run_hosts(self, budget: float) -> tuple[Ending, str | None]:
        """Run one process per host until all have exited; the job's ending and failure reason."""
        self.attempts += 1
        started = int(now())
        logs = self.context.clients.client("logs", self.region)
        flush = self.context.timing.log_flush_interval
        hosts: list[HostProcess] = []
        with self.lock:
            self._hosts = hosts
        for name in self.hosts():
            tree = self.host_tree(name)
            stream = f"{self.log_stream_prefix()}/{name}-{started}"
            shipper = LogShipper(logs, self.log_group, stream, flush, lag=self.context.timing.log_lag)
            host = HostProcess(name, tree / "opt" / "ml", shipper, self._wake.set)
            try:
                host.start(self.job_launcher(), self.launch_spec(name))
            except OSError as e:
                for other in hosts:
                    other.signal(signal.SIGKILL)
                for other in hosts:
                    other.finish()
                return Ending.FAILED, f"AlgorithmError: the job's process could not start: {e}"
            with self.lock:
                hosts.append(host)
                if name == LEADER:
                    self.pid = host.pid

        deadline = time.monotonic() + budget
        timed_out = stopping = False
        grace = self.context.timing.kill_grace
        while not all(h.exited.is_set() for h in hosts):
            if self._stop_requested or self._abandoned:
                terminate(hosts, grace)
                break
            if not stopping and first_failure([h for h in hosts if h.exited.is_set()]) is not None:
                # One host failed: the job has failed, the others are stopped.
                stopping = True
                threading.Thread(target=terminate, args=(hosts, grace), daemon=True).start()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                terminate(hosts, grace)
                break
            self._wake.wait(min(remaining, 1.0))
            self._wake.clear()
        for host in hosts:
            host.finish()  # every line is in CloudWatch before the job reports a terminal state
        if self._stop_requested:
            return Ending.STOPPED, None
        if timed_out:
            return Ending.MAX_RUNTIME, None
        failed = first_failure(hosts)
        if failed is None:
            return Ending.COMPLETED, None
        return Ending.FAILED, self.host_failure(failed, len(hosts) > 1)

    def admin_view(self) -> dict[str, Any]:
        """The admin surface's view: name, service, status, pid."""
        raise NotImplementedError

    def described(self, ended: bool) -> None:
        """A client's Get/Describe was answered (``ended``: with a terminal status): note when one
        first saw the job ended."""
        if ended and self.end_seen_at is None:
            self.end_seen_at = now()

    def hidden(self) -> bool:
        """Whether the job is still inside the not-found window after its creation (eventual consistency)."""
        return now() - self.created_at < self.context.timing.not_found_window

    def usage(self) -> dict[str, Any]:
        """The job as billed: instance type and count, its times (wall), billed instance-seconds (AWS)."""
        scale = self.context.timing.time_scale
        billed = None
        if self.started_at is not None and self.ended_at is not None:
            billed = (self.ended_at - self.started_at) * scale * self.instance_count()
        return {
            "name": self.name, "service": self.service, "arn": self.arn,
            "instance_type": self.instance_type(), "instance_count": self.instance_count(),
            "created": self.created_at, "started": self.started_at, "ended": self.ended_at, "end_seen": self.end_seen_at,
            "ending": self.ending.value if self.ending else None, "warm_start": self.warm_start,
            "billed_instance_seconds": billed,
        }


def instance_quota_problem(jobs: list[JobRun], instance_type: str, count: int, quota: int | None) -> str | None:
    """Why a new job of ``count`` instances of ``instance_type`` is over the account's quota, or None.

    ``jobs``: the service's jobs in the region. Instances of jobs that have not ended count.
    """
    if quota is None:
        return None
    in_use = sum(j.instance_count() for j in jobs if not j.ended and j.instance_type() == instance_type)
    if in_use + count <= quota:
        return None
    return (
        f"The account-level service limit '{instance_type} for job usage' is {quota} Instances, with current "
        f"utilization of {in_use} Instances and a request delta of {count} Instances. Please use AWS Service "
        "Quotas to request an increase for this quota."
    )
