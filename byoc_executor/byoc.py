"""The Covalent plugin: ``BYOCExecutor`` runs each electron as one Braket hybrid job or SageMaker training job.

Covalent finds this module through the ``covalent.executor.executor_plugins`` entry point; its
last dotted name, ``byoc``, is the executor's short name and the ``[executors.byoc]`` section of
covalent.conf. Every key of that section is a constructor argument (see ``settings.py``).

The flow of one electron (``run``): check the settings, pickle the task, upload it, submit one
job, record its handle, follow it to a terminal state, download and verify the result, return it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import random
import tarfile
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError
from covalent._shared_files.config import get_config
from covalent._shared_files.exceptions import TaskCancelledError, TaskRuntimeError
from covalent.executor.base import AsyncBaseExecutor

from byoc_executor import aws, codec, results_watch, storage
from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import BYOCError, ResourceNotFoundError, ResultError
from byoc_executor.joblogs import LogFollower
from byoc_executor.services import JobService, JobState, JobStatus, StagedTask, stage
from byoc_executor.services.braket import BraketJobs, create_job_request
from byoc_executor.services.sagemaker import SageMakerTrainingJobs, create_training_job_request
from byoc_executor.settings import SETTING_NAMES, Settings, defaults, models_loaded

EXECUTOR_PLUGIN_NAME = "BYOCExecutor"
_EXECUTOR_PLUGIN_DEFAULTS = defaults()

log = logging.getLogger(__name__)

FIRST_POLL = 0.25  # seconds; polling backs off from here to poll_freq
POLL_BACKOFF = 1.5
WATCHED_POLL_BACKOFF = 2.0  # status calls back off faster while S3 is watched for the results archive
WATCHED_FIRST_POLL = 2.0  # and wait at least this long after the job is first seen running
LOG_FIRST_READ = 5.0  # seconds from the job seen running to the first read of its logs
LOG_POLL = 2.0  # the shortest pause between two reads of the job's logs
LOG_POLL_MAX = 30.0  # the longest, for a job that has been quiet for a while
QUEUE_ALLOWANCE = 24 * 3600  # how long past max_runtime a job may sit queued before we give up
CANCEL_WAIT = 300  # how long to follow a cancelled job to its end
LOG_TAIL_LINES = 40
CANCEL_CHECK = 1.0  # seconds between two questions to Covalent's dispatcher: was this node cancelled?
BUCKET_CHECK_TTL = 300.0  # a bucket found reachable is not asked about again for this long


class BYOCExecutor(AsyncBaseExecutor):
    """Run an electron as an AWS Braket hybrid job or a SageMaker training job on your own image.

    Every setting may be given here or in the ``[executors.byoc]`` section of covalent.conf; an
    argument left out (None) takes the config value, then the built-in default. The README's
    configuration table lists them all. Construction does no I/O.

    Raises:
        ConfigurationError: a setting is malformed (checked without any I/O). A missing required
            setting is reported when the electron runs, before anything is uploaded: Covalent's
            server builds executors from the config section before applying the client's values.
    """

    def __init__(
        self,
        service: str | None = None,
        image_uri: str | None = None,
        s3_bucket_name: str | None = None,
        s3_prefix: str | None = None,
        role_arn: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        credentials_file: str | None = None,
        device: str | None = None,
        instance_type: str | None = None,
        instance_count: int | None = None,
        volume_size_gb: int | None = None,
        max_runtime: int | None = None,
        poll_freq: float | None = None,
        environment: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        endpoint_url: str | None = None,
        keep_artifacts: bool | None = None,
        use_spot: bool | None = None,
        max_wait: int | None = None,
        checkpoint_s3_uri: str | None = None,
        keep_alive_period: int | None = None,
        subnets: list[str] | None = None,
        security_group_ids: list[str] | None = None,
        enable_network_isolation: bool | None = None,
        encrypt_inter_container_traffic: bool | None = None,
        kms_key_id: str | None = None,
        reservation_arn: str | None = None,
        run_on_all_hosts: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = {k: v for k, v in locals().items() if k in SETTING_NAMES}
        configured = _config_section()
        for name in SETTING_NAMES:
            value = given[name]
            if value is None:
                value = configured.get(name, _EXECUTOR_PLUGIN_DEFAULTS[name])
            setattr(self, name, value)
        self.settings().check_shapes(complete=False)

    def settings(self) -> Settings:
        """This executor's settings (its attributes are the source: they survive to_dict/from_dict)."""
        return Settings(**{name: getattr(self, name) for name in SETTING_NAMES})

    # -- run ----------------------------------------------------------------------------------------

    async def run(self, function: Callable, args: list, kwargs: dict, task_metadata: dict) -> Any:
        """Run one electron as one job and return its value.

        Raises:
            TaskRuntimeError: the task raised, the job failed, or its result could not be verified;
                the node's stderr says which and why.
            TaskCancelledError: Covalent cancelled the node; the job was cancelled too.
        """
        dispatch_id, node_id = task_metadata["dispatch_id"], task_metadata["node_id"]
        service: JobService | None = None
        encoded: codec.EncodedTask | None = None
        job_id = ""
        ended = False
        try:
            settings = self.settings()
            if models_loaded(settings.service):
                settings.check_against_models()  # microseconds once the model has been read
            else:
                await asyncio.to_thread(settings.check_against_models)  # the first read: ~100 ms
            if await self._cancel_requested():
                raise TaskCancelledError(f"node {node_id} was cancelled before its job was submitted")
            encoded = await asyncio.to_thread(codec.encode_task, function, args, kwargs)
            staged = stage(settings, dispatch_id, node_id, encoded.hyperparameters())
            target = aws.AWSTarget.of(settings)
            clients = aws.pool()
            s3 = await clients.client("s3", target)
            service = await _service(settings, target)
            await _check_bucket(s3, target, settings.s3_bucket_name)
            await self._upload(s3, settings, staged, encoded)
            await _discard(encoded)  # the payload is in S3 now: its spill file, if any, is not needed
            request = _request(settings, staged)
            job_id = await service.submit(request)
            region = await clients.region(target)
            await self.set_job_handle({"service": settings.service, "job_id": job_id, "region": region})
            log.info("%s:%s submitted as %s job %s", dispatch_id, node_id, settings.service, job_id)
            follower = LogFollower(await clients.client("logs", target), service.log_group, f"{staged.job_name}/")
            # The dispatch's running jobs' archives are watched with one listing of its prefix.
            status = await self._follow(service, job_id, settings, follower, s3, staged.dispatch_prefix)
            ended = True
            value = await self._collect(s3, status, settings, encoded.result_key, follower)
            if not settings.keep_artifacts:
                await _delete_artifacts(s3, staged)
            return value
        except (TaskCancelledError, TaskRuntimeError):
            raise
        except BYOCError as e:
            message = str(e)
        except (BotoCoreError, ClientError, OSError, RuntimeError, asyncio.TimeoutError) as e:
            # Lost contact with AWS (after botocore's retries), or with Covalent's dispatcher.
            message = f"{type(e).__name__}: {e}"
        finally:
            if encoded is not None:
                await _discard(encoded)
        if job_id and not ended and service is not None:
            message += await _abandon(service, job_id)
        self._stderr(f"byoc executor: {message}\n")
        raise TaskRuntimeError(message)

    async def _upload(self, s3: Any, settings: Settings, staged: StagedTask, encoded: codec.EncodedTask) -> None:
        await storage.upload(s3, staged.payload, encoded.pieces(), settings.tags, settings.kms_key_id)
        if settings.service == "braket":
            await storage.put_bytes(s3, staged.source, _source_archive(), settings.tags, settings.kms_key_id)

    async def _follow(
        self, service: JobService, job_id: str, settings: Settings, follower: LogFollower, s3: Any, group_prefix: str = ""
    ) -> JobStatus:
        """Follow the job to its end; cancel it if Covalent asks. Every wait is bounded.

        Status calls back off from FIRST_POLL to ``poll_freq`` (with jitter), so a long job costs
        few of them: the job APIs have low request-rate limits per account. What makes the end
        seen promptly is a cheaper signal: while the job runs, the executor watches S3 (whose rate
        limits are orders of magnitude higher) for the results archive, through one listing of
        the dispatch's prefix shared by all its running jobs (``results_watch``). The archive is
        uploaded before the service reports the job ended, so once it appears the status is
        polled fast again until the job is terminal.

        While the job runs, its new log lines go to this process's log (the Covalent server's:
        Covalent 0.240 publishes a node's stdout/stderr only when the node ends), LOG_FIRST_READ
        seconds after it starts running, then every LOG_POLL seconds while it prints and less often
        (up to LOG_POLL_MAX) while it is quiet, and once more after the end; its progress events go to the
        node's stderr as ``[byoc]`` lines. Whether Covalent cancelled the node is asked every
        CANCEL_CHECK seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.max_runtime + QUEUE_ALLOWANCE
        interval = FIRST_POLL
        # A job just submitted is queued: the first status call can wait FIRST_POLL.
        next_status = loop.time() + FIRST_POLL
        next_cancel_check = loop.time()
        next_logs: float | None = None  # set when the job is first seen running
        log_interval = LOG_POLL
        last: JobState | None = None
        cancelling_since: float | None = None
        result_seen = False
        reported = 0
        results: storage.S3Location | None = None
        watcher: results_watch.ArchiveWatcher | None = None
        try:
            while True:
                now = loop.time()
                if now >= next_status:
                    status = await service.describe(job_id)
                    results = storage.S3Location.parse(status.results_uri)
                    for event in status.progress[reported:]:
                        self._stderr(f"[byoc] {settings.service} job {status.job_id}: {event}\n")
                        log.info("job %s: %s", job_id, event)
                    reported = max(reported, len(status.progress))
                    if status.state is not last:
                        log.info("job %s: %s (%s)", job_id, status.raw_status, status.detail)
                        if last is not None and status.state is not JobState.RUNNING:
                            # A change may bring the next one soon (CANCELLING: the end); the first
                            # answer and RUNNING do not (the end is watched through S3 below), so
                            # status calls keep backing off then.
                            interval = FIRST_POLL
                        last = status.state
                    if status.state.terminal:
                        for line in await follower.poll(final=True):
                            log.info("job %s | %s", job_id, line)
                        # Covalent may have cancelled the job itself (``cancel()`` on another executor
                        # instance) between two of this loop's questions about it.
                        if cancelling_since is not None or (status.state is JobState.CANCELLED and await self._cancel_requested()):
                            raise TaskCancelledError(f"job {job_id} was cancelled ({status.raw_status})")
                        return status
                    if status.state is JobState.RUNNING and not result_seen and cancelling_since is None:
                        # While S3 is watched for the end, status calls only catch a job that ends
                        # without leaving an archive (a crash, a lost instance): the next one comes
                        # WATCHED_FIRST_POLL after the job was seen running, then backs off faster.
                        interval = min(max(interval * WATCHED_POLL_BACKOFF, WATCHED_FIRST_POLL), settings.poll_freq)
                        next_status = now + interval * random.uniform(0.8, 1.0)
                    else:
                        next_status = now + interval * random.uniform(0.8, 1.0)
                        interval = min(interval * POLL_BACKOFF, settings.poll_freq)
                running = last in (JobState.RUNNING, JobState.CANCELLING, JobState.UNKNOWN)
                if running and next_logs is None:
                    # A job that has just started has little to read yet, and all of a short job's
                    # lines come with the read after its end.
                    next_logs = now + LOG_FIRST_READ
                if running and now >= next_logs:  # type: ignore[operator]
                    lines = await follower.poll()
                    for line in lines:
                        log.info("job %s | %s", job_id, line)
                    # A quiet job is read less and less often; one that prints, every LOG_POLL.
                    log_interval = LOG_POLL if lines else min(log_interval * POLL_BACKOFF, LOG_POLL_MAX)
                    next_logs = now + log_interval
                probing = last is JobState.RUNNING and not result_seen and results is not None
                if probing and watcher is None:
                    watcher = results_watch.watch(s3, results, group_prefix, settings.poll_freq)  # type: ignore[arg-type]
                elif not probing and watcher is not None:
                    watcher.close()
                    watcher = None
                if watcher is not None and watcher.seen.is_set():
                    watcher.close()
                    watcher, result_seen, interval, next_status = None, True, FIRST_POLL, now  # the end is near
                    continue
                if cancelling_since is None and now >= next_cancel_check:
                    next_cancel_check = now + CANCEL_CHECK
                    if await self._cancel_requested():
                        log.info("cancel requested: cancelling job %s", job_id)
                        await service.cancel(job_id)
                        cancelling_since, next_status, interval = now, now, FIRST_POLL  # follow it closely to its end
                if cancelling_since is not None and now - cancelling_since > CANCEL_WAIT:
                    raise TaskCancelledError(f"job {job_id} was asked to cancel {CANCEL_WAIT}s ago and is still {last}")
                if now > deadline:
                    await service.cancel(job_id)
                    raise ResultError(
                        f"job {job_id} is still {last} after max_runtime + {QUEUE_ALLOWANCE}s; it was cancelled", job_id=job_id
                    )
                wake = min(next_status, deadline + 0.01)
                if running and next_logs is not None:
                    wake = min(wake, next_logs)
                if cancelling_since is None:
                    wake = min(wake, next_cancel_check)
                else:
                    wake = min(wake, cancelling_since + CANCEL_WAIT + 0.01)
                delay = max(0.0, wake - loop.time())
                if watcher is not None:
                    await watcher.wait(delay)  # wakes early when the archive appears
                else:
                    await asyncio.sleep(delay)
        finally:
            if watcher is not None:
                watcher.close()

    async def _collect(self, s3: Any, status: JobStatus, settings: Settings, result_key: str, follower: LogFollower) -> Any:
        """Turn a terminal job into the electron's value, or a TaskRuntimeError that says why."""
        try:
            outcome = await _fetch_outcome(s3, status, result_key)
        except ResourceNotFoundError:
            outcome = codec.JobOutcome(ok=False, has_result=False)
        if not outcome.has_result and (outcome.stdout or outcome.stderr):
            self._stderr("byoc executor: the job left no result; what it printed before it ended (unauthenticated):\n")
        self._stdout(outcome.stdout)
        self._stderr(outcome.stderr)
        if outcome.has_result and outcome.ok:
            if status.state is JobState.COMPLETED:
                return outcome.value
            raise ResultError(
                f"job {status.job_id} ended {status.raw_status} although its task returned: {status.failure_reason}",
                job_id=status.job_id,
                status=status.raw_status,
            )
        if outcome.has_result:
            exc = outcome.exception or {}
            self._stderr(f"\nThe electron raised {exc.get('type')} in {settings.service} job {status.job_id}:\n{exc.get('traceback', '')}")
            if status.failure_reason and exc.get("type", "").endswith("JobStopped"):
                # The service stopped the task (e.g. its maximum runtime): its reason is the news.
                self._stderr(f"byoc executor: {settings.service} job {status.job_id} ended {status.raw_status}: {status.failure_reason}\n")
            raise TaskRuntimeError(f"{exc.get('type')}: {exc.get('message')}")
        if status.state is JobState.COMPLETED:
            raise ResultError(f"job {status.job_id} completed but left no result at {status.results_uri}", job_id=status.job_id)
        tail = "\n".join(list(follower.lines)[-LOG_TAIL_LINES:])
        reason = status.failure_reason or "(the service gave no reason)"
        message = f"{settings.service} job {status.job_id} ended {status.raw_status}: {reason}"
        self._stderr(f"byoc executor: {message}\n")
        if tail:
            self._stderr(f"Last lines of the job's log ({status.log_group}):\n{tail}\n")
        raise TaskRuntimeError(message)

    async def cancel(self, task_metadata: dict, job_handle: Any) -> bool:
        """Cancel the job behind ``job_handle`` (called by Covalent on a fresh executor instance).

        Returns:
            True when the cancel request was accepted (or the job had already ended).
        """
        if not job_handle:
            return True  # nothing was submitted; run() sees the request before it submits
        settings = self.settings()
        if isinstance(job_handle, dict) and job_handle.get("region"):
            settings.region = job_handle["region"]
        service = await _service(settings, aws.AWSTarget.of(settings))
        try:
            await service.cancel(job_handle["job_id"])
        except BYOCError:
            log.exception("could not cancel job %s", job_handle)
            return False
        return True

    # -- helpers -------------------------------------------------------------------------------------

    async def _cancel_requested(self) -> bool:
        # Outside a Covalent dispatch (no runtime queues), nobody can request a cancel.
        if "_send_queue" not in self.__dict__:
            return False
        return bool(await self.get_cancel_requested())

    def _stdout(self, text: str) -> None:
        if text and self.task_stdout is not None:
            self.task_stdout.write(text)

    def _stderr(self, text: str) -> None:
        if text and self.task_stderr is not None:
            self.task_stderr.write(text)


def _config_section() -> dict[str, Any]:
    # In-memory: Covalent read covalent.conf when it was imported.
    try:
        section = get_config("executors.byoc")
    except KeyError:
        return {}
    return section if isinstance(section, dict) else {}


async def _service(settings: Settings, target: aws.AWSTarget) -> JobService:
    client = await aws.pool().client(settings.service, target)
    return BraketJobs(client) if settings.service == "braket" else SageMakerTrainingJobs(client)


def _request(settings: Settings, staged: StagedTask) -> dict[str, Any]:
    if settings.service == "braket":
        return create_job_request(settings, staged, _source_digest())
    return create_training_job_request(settings, staged)


async def _fetch_outcome(s3: Any, status: JobStatus, result_key: str) -> codec.JobOutcome:
    """Download the job's results archive and verify it.

    An archive of up to 16 MiB is read into memory in one request; a larger one is streamed to a
    temporary file. Verification and unpickling run in a worker thread.
    """
    paths: list[str] = []

    def spill_file() -> str:
        fd, path = tempfile.mkstemp(prefix="byoc-result-", suffix=".tar.gz")
        os.close(fd)
        paths.append(path)
        return path

    try:
        archive = await storage.download(s3, storage.S3Location.parse(status.results_uri), spill_file)
        # Even a small archive may unpack to a large value: verify and unpickle off the loop.
        return await asyncio.to_thread(codec.read_results_archive, archive, result_key)
    finally:
        for path in paths:
            await asyncio.to_thread(os.unlink, path)  # deleting a large file can take a while


async def _discard(encoded: codec.EncodedTask) -> None:
    """Delete the payload's spill file (if any) off the event loop: a large file takes a while."""
    if encoded.body_path is None:
        encoded.discard()
    else:
        await asyncio.to_thread(encoded.discard)


_buckets_seen: dict[tuple[aws.AWSTarget, str], float] = {}


async def _check_bucket(s3: Any, target: aws.AWSTarget, bucket: str) -> None:
    """HeadBucket before the first upload to a bucket (a clear error), then again every few minutes."""
    key = (target, bucket)
    if time.monotonic() - _buckets_seen.get(key, float("-inf")) < BUCKET_CHECK_TTL:
        return
    await storage.head_bucket(s3, bucket)
    _buckets_seen[key] = time.monotonic()


async def _abandon(service: JobService, job_id: str) -> str:
    """Cancel a job this electron can no longer follow, so it does not run on at the user's cost."""
    try:
        await service.cancel(job_id)
    except (BYOCError, BotoCoreError, ClientError, OSError) as e:
        return f". The job {job_id} could not be followed and could not be cancelled ({e}): stop it yourself"
    return f". The job {job_id} could not be followed, so it was cancelled"


async def _delete_artifacts(s3: Any, staged: StagedTask) -> None:
    """Delete a task's S3 artifacts once its result is safe. A failure here loses nothing: warn only."""
    try:
        deleted = await storage.delete_prefix(s3, storage.S3Location(staged.base.bucket, staged.base.key.rstrip("/") + "/"))
        log.debug("deleted %d artifacts of %s", deleted, staged.job_name)
    except BYOCError as e:
        log.warning("could not delete the artifacts under %s: %s", staged.base.uri, e)


@lru_cache(maxsize=1)
def _source_archive() -> bytes:
    """The Braket source archive: the entry script itself, with a fixed mtime so its bytes are stable."""
    data = Path(contract.__file__).read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{contract.ENTRY_MODULE}.py")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@lru_cache(maxsize=1)
def _source_digest() -> str:
    """The SHA-256 the job checks the source archive against (computed once, like the archive)."""
    return hashlib.sha256(_source_archive()).hexdigest()


def _register_if_skipped() -> None:
    """Register the plugin when this module was imported before Covalent.

    ``import byoc_executor.byoc`` with Covalent not yet imported makes Covalent's plugin loader
    see this module half-initialised and skip it; ``executor="byoc"`` would then be unknown in
    this process. ``from byoc_executor import BYOCExecutor`` avoids that order; this repairs it.
    """
    import sys

    manager = getattr(sys.modules.get("covalent.executor"), "_executor_manager", None)
    if manager is None:
        return  # Covalent's loader is importing this module right now: it registers it itself
    if "byoc" not in manager.executor_plugins_map:
        manager._populate_executor_map_from_module(sys.modules[__name__])


_register_if_skipped()
