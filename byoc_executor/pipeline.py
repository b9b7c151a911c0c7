"""The life of one job, for an electron (``BYOCExecutor.run``) or a task group (``send``/``poll``/``receive``).

    check the settings -> stage (names, S3 locations, tags; the request built and checked before
    anything is uploaded) -> upload the payload -> submit -> follow (``follow.py``) -> fetch and
    verify the result -> delete the artifacts once the value is safe

Each step is a function over a :class:`Job`; the plugin face (``byoc.py``) strings them together
and translates the outcome into Covalent's terms.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import logging
import os
import random
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError
from covalent._shared_files.config import get_config

from byoc_executor import aws, clock, codec, policy, storage
from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import BYOCError
from byoc_executor.follow import CALL_ERRORS, Cancelled, JobFollower, Node
from byoc_executor.joblogs import LogFollower
from byoc_executor.services import JobService, JobStatus, StagedTask, stage
from byoc_executor.services.braket import BraketJobs, create_job_request
from byoc_executor.services.sagemaker import SageMakerTrainingJobs, create_training_job_request
from byoc_executor.settings import Settings, models_loaded

log = logging.getLogger(__name__)

SUBMIT_RETRY_FOR = 600.0  # how long a create that fails transiently is retried (it is idempotent)
COLLECT_RETRY_FOR = 600.0  # how long a result download that fails transiently is retried
EXIT_CANCEL_TIMEOUT = 30.0  # at server shutdown, how long the cancel of a running job may take
BUCKET_CHECK_TTL = 300.0  # a bucket found reachable is not asked about again for this long

_background: set[asyncio.Task] = set()  # tasks that must not be garbage-collected while they run


@dataclass
class Job:
    """One submitted job: where its artifacts are and how to reach it."""

    settings: Settings
    staged: StagedTask
    service: JobService
    s3: Any
    logs: Any
    job_id: str
    region: str
    result_key: str = field(repr=False)
    target: aws.AWSTarget | None = None

    @property
    def handle(self) -> dict[str, str]:
        """What Covalent records for ``cancel()`` (and ``byoc-executor`` finds jobs by)."""
        return {"service": self.settings.service, "job_id": self.job_id, "job_name": self.staged.job_name, "region": self.region}


async def check_settings(settings: Settings) -> None:
    """Every setting, and what botocore's models say the API accepts (before anything is sent).

    Raises:
        ConfigurationError: the first setting that is wrong, with the fix.
    """
    if models_loaded(settings.service):
        settings.check_against_models()  # microseconds once the model has been read
    else:
        await asyncio.to_thread(settings.check_against_models)  # the first read: ~100 ms


async def launch(
    settings: Settings, dispatch_id: str, node_id: int | str, encoded: codec.EncodedTask,
    say: Callable[[str], None] | None = None,
    node: Node | None = None,
) -> Job:
    """Stage, upload and submit; returns the job. A failure before the submit leaves no job.

    Args:
        say: where the node's ``[byoc]`` lines go (a wait for capacity is reported there).
        node: the electron, asked whether Covalent cancelled it while a create waits for capacity.

    Raises:
        BYOCError, BotoCoreError, OSError: what the policy does not wait out, or a bucket missing.
    """
    staged = stage(settings, dispatch_id, node_id, encoded.hyperparameters(), server=server_identity())
    request = _request(settings, staged)  # pure, and checked before anything is uploaded
    target = aws.AWSTarget.of(settings)
    clients = aws.pool()
    s3 = await clients.client("s3", target)
    service = await _service(settings, target)
    await _check_bucket(s3, target, settings.s3_bucket_name)
    await storage.upload(s3, staged.payload, encoded.pieces(), staged.object_tags, settings.kms_key_id)
    if settings.service == "braket":
        await storage.put_bytes(s3, staged.source, source_archive(), staged.object_tags, settings.kms_key_id)
    await discard(encoded)  # the payload is in S3 now: its spill file, if any, is not needed
    job_id = await _submit(service, request, settings, say or (lambda line: None), node)  # counted in _holding
    try:
        region = await clients.region(target)
        logs = await clients.client("logs", target)
    except BaseException:
        _release(settings)  # no follower will: the electron ends here
        raise
    log.info("%s:%s submitted as %s job %s", dispatch_id, node_id, settings.service, job_id)
    return Job(settings, staged, service, s3, logs, job_id, region, encoded.result_key, target)


async def reattach(settings: Settings, staged: StagedTask, job_id: str, region: str, result_key: str) -> Job:
    """The :class:`Job` of a job submitted earlier in this process (a task group's ``receive()``)."""
    settings.region = region
    target = aws.AWSTarget.of(settings)
    clients = aws.pool()
    return Job(
        settings, staged, await _service(settings, target), await clients.client("s3", target),
        await clients.client("logs", target), job_id, region, result_key, target,
    )


def log_follower(job: Job) -> LogFollower:
    return LogFollower(job.logs, job.service.log_group, job.service.log_stream_prefix(job.job_id, job.staged.job_name))


async def follow(job: Job, node: Node, logs: LogFollower) -> JobStatus:
    """Follow the job to its end (``follow.JobFollower``: schedules, deadlines, the error policy).

    The dispatch's running jobs' archives are watched with one listing of its prefix.
    """
    try:
        return await JobFollower(job.service, job.job_id, job.settings, node, logs, job.s3, job.staged.dispatch_prefix).follow()
    finally:
        _release(job.settings)


async def fetch_outcome(job: Job, status: JobStatus) -> codec.JobOutcome:
    """Download the job's results archive and verify it (retrying what the policy waits out).

    An archive of up to 16 MiB is read into memory in one request; a larger one is streamed to a
    temporary file. Verification and unpickling run in a worker thread.

    Raises:
        ResourceNotFoundError: the job left no archive.
        ResultError: the archive or its result failed verification.
    """
    paths: list[str] = []

    def spill_file() -> str:
        fd, path = tempfile.mkstemp(prefix="byoc-result-", suffix=".tar.gz")
        os.close(fd)
        paths.append(path)
        return path

    loop = asyncio.get_running_loop()
    give_up, pause = loop.time() + COLLECT_RETRY_FOR, 1.0
    try:
        while True:
            try:
                archive = await storage.download(job.s3, storage.S3Location.parse(status.results_uri), spill_file)
                break
            except (BYOCError, BotoCoreError, OSError, asyncio.TimeoutError) as e:
                # The result is safe in S3 either way; a passing condition is waited out.
                if policy.classify(e) is not policy.Verdict.TRANSIENT or loop.time() + pause > give_up:
                    raise
                log.warning("downloading the result of %s failed (%s); retrying", status.job_id, policy.describe(e))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 60.0)
        # Even a small archive may unpack to a large value: verify and unpickle off the loop.
        return await asyncio.to_thread(codec.read_results_archive, archive, job.result_key)
    finally:
        for path in paths:
            await asyncio.to_thread(os.unlink, path)  # deleting a large file can take a while


async def delete_artifacts_once_recorded(job: Job) -> None:
    """Delete the task's S3 artifacts once Covalent has recorded the value, unless ``keep_artifacts``.

    Called once the value has been handed to Covalent (``server_stop.after_recorded``: in a
    server, when Covalent's task that records it has ended well). A failure loses nothing: a warning.
    """
    if job.settings.keep_artifacts:
        return

    async def delete() -> None:
        where = storage.S3Location(job.staged.base.bucket, job.staged.base.key.rstrip("/") + "/")
        try:
            # The pool's client of now: the job's may have been closed meanwhile.
            s3 = await aws.pool().client("s3", job.target) if job.target is not None else job.s3
            deleted = await storage.delete_prefix(s3, where)
            log.debug("deleted %d artifacts of %s", deleted, job.staged.job_name)
        except BYOCError as e:
            log.warning("could not delete the artifacts under %s: %s", job.staged.base.uri, e)

    from byoc_executor import server_stop  # server_stop imports this module's neighbours lazily

    await server_stop.after_recorded(delete)


async def settle_background() -> None:
    """Wait for this module's background tasks (a caller about to close the clients)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


async def cancel_at_exit(job: Job, say: Callable[[str], None]) -> None:
    """The server is shutting down while the job runs: cancel it, unless ``on_server_exit = "keep"``.

    Shielded, so that the request is sent and answered before the task lets the loop close.
    """
    label = job_label(job.staged.job_name, job.job_id)
    if job.settings.on_server_exit == "keep":
        log.warning("the Covalent server is stopping; job %s keeps running (on_server_exit = keep): "
                    "collect its value with `byoc-executor result %s`", label, job.job_id)
        return
    try:
        await asyncio.shield(asyncio.wait_for(job.service.cancel(job.job_id), EXIT_CANCEL_TIMEOUT))
        log.warning("the Covalent server is stopping: job %s was cancelled (on_server_exit = cancel)", label)
        say(f"byoc executor: the Covalent server stopped; {job.settings.service} job {label} was cancelled\n")
    except (BYOCError, BotoCoreError, OSError, asyncio.TimeoutError, asyncio.CancelledError) as e:
        log.error("the Covalent server is stopping and job %s could not be cancelled (%s): stop it yourself "
                  "(`byoc-executor cancel %s`)", label, e, job.job_id)


def job_label(name: str, job_id: str) -> str:
    """How log lines name a job: its name, and its ARN when that is its id (a Braket ARN ends in a
    UUID, so the name a user sees in the console and in tags is not in it)."""
    return name if not job_id or job_id == name else f"{name} ({job_id})"


async def abandon(job: Job) -> str:
    """Cancel a job its electron can no longer follow (a bug, not a glitch), so it does not run on."""
    try:
        await job.service.cancel(job.job_id)
    except (BYOCError, BotoCoreError, ClientError, OSError) as e:
        return f". The job {job.job_id} could not be followed and could not be cancelled ({e}): stop it yourself"
    return f". The job {job.job_id} could not be followed, so it was cancelled"


async def discard(encoded: codec.EncodedTask) -> None:
    """Delete the payload's spill file (if any) off the event loop: a large file takes a while."""
    if encoded.body_path is None:
        encoded.discard()
    else:
        await asyncio.to_thread(encoded.discard)


def server_identity() -> str:
    """Which Covalent server follows this process's jobs: ``<host>:<dispatcher port>`` (the
    ``byoc:server`` tag, so that a restarted server can tell its own jobs from others')."""
    try:
        port = get_config("dispatcher.port")
    except KeyError:
        port = ""
    return f"{socket.gethostname()}:{port}"


async def _service(settings: Settings, target: aws.AWSTarget) -> JobService:
    client = await aws.pool().client(settings.service, target)
    return BraketJobs(client) if settings.service == "braket" else SageMakerTrainingJobs(client)


def service_for(settings: Settings) -> Any:
    """The job service of ``settings`` (a coroutine): for ``cancel()`` on a fresh executor."""
    return _service(settings, aws.AWSTarget.of(settings))


def _request(settings: Settings, staged: StagedTask) -> dict[str, Any]:
    if settings.service == "braket":
        return create_job_request(settings, staged, source_digest())
    return create_training_job_request(settings, staged)


_buckets_seen: dict[tuple[aws.AWSTarget, str], float] = {}


async def _check_bucket(s3: Any, target: aws.AWSTarget, bucket: str) -> None:
    """HeadBucket before the first upload to a bucket (a clear error), then again every few minutes."""
    key = (target, bucket)
    if time.monotonic() - _buckets_seen.get(key, float("-inf")) < BUCKET_CHECK_TTL:
        return
    await storage.head_bucket(s3, bucket)
    _buckets_seen[key] = time.monotonic()


_holding: collections.Counter[tuple[Any, str, str]] = collections.Counter()
"""Jobs this process created and has not yet seen end, by (AWS target, service, instance type): the
share of the account's instance quota that will come back to this server's electrons."""
_in_flight: collections.Counter[tuple[Any, str, str]] = collections.Counter()
"""Creates being answered right now, by the same key: one of them may have just taken the quota."""
INCONCLUSIVE_TRIES = 3
"""Refusals a create takes, while only other creates in flight (no job of this server) could hold
the quota, before it concludes that nothing here will free it (a quota of 0, or other users' jobs)."""


def _capacity_key(settings: Settings) -> tuple[Any, str, str]:
    # Braket's ServiceQuotaExceededException may be its concurrent-jobs quota, not a per-type one:
    # any of this server's Braket jobs in the region frees some of it.
    kind = settings.instance_type if settings.service == "sagemaker" else "any"
    return aws.AWSTarget.of(settings), settings.service, kind


def _release(settings: Settings) -> None:
    key = _capacity_key(settings)
    _holding[key] = max(0, _holding[key] - 1)


async def _submit(
    service: JobService, request: dict[str, Any], settings: Settings, say: Callable[[str], None], node: Node | None = None,
) -> str:
    """Create the job, retrying what the policy calls transient: the create is idempotent (Braket's
    clientToken, SageMaker's name), so a retry whose first attempt took effect adopts that job.

    A create over the account's instance quota waits, like a queued job, for one of this server's
    own jobs of the same kind to end (the policy's CAPACITY; at most ``queue_timeout``); with
    none running, nothing here frees the quota, and the refusal says how to raise it.
    """
    from byoc_executor import server_stop  # (it imports this module's neighbours lazily)

    key = _capacity_key(settings)
    give_up = clock.now() + SUBMIT_RETRY_FOR
    capacity_until = clock.now() + settings.effective_queue_timeout
    pause = capacity_pause = 1.0
    waited_since: float | None = None
    inconclusive = 0
    while True:
        _in_flight[key] += 1
        try:
            job_id = await service.submit(request)
        except BaseException as e:
            _in_flight[key] -= 1
            if not isinstance(e, (BYOCError, BotoCoreError, OSError, asyncio.TimeoutError)):
                raise
            verdict = policy.classify(e)
            if verdict is policy.Verdict.CAPACITY:
                # Only this server's running jobs are sure to free the quota; another create in flight
                # may just have taken it (worth a few more tries, never a long wait).
                inconclusive = 0 if _holding[key] else inconclusive + 1
                hopeless = not _holding[key] and (not _in_flight[key] or inconclusive > INCONCLUSIVE_TRIES)
                if hopeless or clock.now() + capacity_pause > capacity_until:
                    raise InstanceQuotaError(settings, e, waited=waited_since is not None) from e
                if waited_since is None:
                    waited_since = clock.now()
                    say(
                        f"the account's {settings.instance_type} quota is in use ({policy.describe(e)}); waiting for one "
                        f"of this server's {_holding[key]} {settings.service} jobs to end "
                        f"(at most queue_timeout = {settings.effective_queue_timeout} s)"
                    )
                # Jittered, so that waiters that started together do not all ask again at once.
                await clock.sleep(capacity_pause * random.uniform(0.5, 1.0))
                capacity_pause = min(capacity_pause * 2, 60.0)
                give_up, pause = clock.now() + SUBMIT_RETRY_FOR, 1.0  # a transient error afterwards gets its full retries
                if server_stop.stopping_now():
                    raise Cancelled("the Covalent server is stopping; the job waited for the instance quota and was never created") from e
                if node is not None and await _asked_to_cancel(node):
                    raise Cancelled(f"the node was cancelled while its job waited for the {settings.instance_type} quota; no job was created") from e
                continue
            if verdict is not policy.Verdict.TRANSIENT or clock.now() + pause > give_up:
                raise
            log.warning("creating the job failed (%s); retrying in %.0f s", policy.describe(e), pause)
            await clock.sleep(pause)
            pause = min(pause * 2, 60.0)
            continue
        _holding[key] += 1  # until pipeline.follow sees the job end (same turn of the loop: no gap)
        _in_flight[key] -= 1
        if waited_since is not None:
            say(f"{settings.service} job submitted after waiting {clock.now() - waited_since:.0f} s for the instance quota")
        return job_id


async def _asked_to_cancel(node: Node) -> bool:
    try:
        return await node.cancel_requested()
    except CALL_ERRORS:
        return False  # a slow dispatcher: asked again at the next pause


class InstanceQuotaError(BYOCError):
    """A create refused over the account's instance quota, with nothing of this server's to wait for."""

    def __init__(self, settings: Settings, error: BaseException, waited: bool):
        why = (
            f"waited queue_timeout = {settings.effective_queue_timeout} s for this server's jobs to free it"
            if waited else "none of this server's jobs holds any of it, so waiting would not free it"
        )
        super().__init__(
            f"{settings.service} refused the job: the account's quota of {settings.instance_type} instances is in use "
            f"({error}); {why}. Fix: request a higher quota in Service Quotas ({settings.service}, "
            f"{settings.instance_type}), choose another instance_type, or run fewer electrons at once"
        )


@lru_cache(maxsize=1)
def source_archive() -> bytes:
    """The Braket source archive: the entry script itself, with a fixed mtime so its bytes are stable."""
    data = Path(contract.__file__).read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{contract.ENTRY_MODULE}.py")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@lru_cache(maxsize=1)
def source_digest() -> str:
    """The SHA-256 the job checks the source archive against (computed once, like the archive)."""
    return hashlib.sha256(source_archive()).hexdigest()
