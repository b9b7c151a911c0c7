"""The Covalent plugin: ``BYOCExecutor`` runs each electron as one Braket hybrid job or SageMaker training job.

Covalent finds this module through the ``covalent.executor.executor_plugins`` entry point; its
last dotted name, ``byoc``, is the executor's short name and the ``[executors.byoc]`` section of
covalent.conf. Every key of that section is a constructor argument (see ``settings.py``).

The flow of one electron (``run``): check the settings, pickle the task, upload it, submit one
job, record its handle, follow it to a terminal state, download and verify the result, return it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import json
import logging
import os
import socket
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
from covalent.executor.utils import Signals

from byoc_executor import aws, codec, policy, storage
from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import BYOCError, FollowError, ResourceNotFoundError, ResultError
from byoc_executor.follow import Cancelled, JobFollower
from byoc_executor.joblogs import LogFollower
from byoc_executor.services import JobService, JobState, JobStatus, StagedTask, stage
from byoc_executor.services.braket import BraketJobs, create_job_request
from byoc_executor.services.sagemaker import SageMakerTrainingJobs, create_training_job_request
from byoc_executor.settings import SETTING_NAMES, Settings, defaults, models_loaded

EXECUTOR_PLUGIN_NAME = "BYOCExecutor"
_EXECUTOR_PLUGIN_DEFAULTS = defaults()

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
DISPATCHER_TIMEOUT = 5.0  # Covalent's own wait for an answer of its dispatcher (executor/base.py)
HANDLE_PATIENCE = 3600.0  # how long the job handle's answer is awaited (beside the following)
SUBMIT_RETRY_FOR = 600.0  # how long a create that fails transiently is retried (it is idempotent)
COLLECT_RETRY_FOR = 600.0  # how long a result download that fails transiently is retried
EXIT_CANCEL_TIMEOUT = 30.0  # at server shutdown, how long the cancel of a running job may take
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
        queue_timeout: int | None = None,
        on_server_exit: str | None = None,
        tag_objects: bool | None = None,
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
        settings: Settings | None = None
        job_id = ""
        ended = False
        try:
            settings = self.settings()
            if models_loaded(settings.service):
                settings.check_against_models()  # microseconds once the model has been read
            else:
                await asyncio.to_thread(settings.check_against_models)  # the first read: ~100 ms
            if await self._cancel_requested_if_answered():
                raise TaskCancelledError(f"node {node_id} was cancelled before its job was submitted")
            encoded = await asyncio.to_thread(codec.encode_task, function, args, kwargs)
            staged = stage(settings, dispatch_id, node_id, encoded.hyperparameters(), server=server_identity())
            request = _request(settings, staged)  # pure, and checked before anything is uploaded
            target = aws.AWSTarget.of(settings)
            clients = aws.pool()
            s3 = await clients.client("s3", target)
            service = await _service(settings, target)
            await _check_bucket(s3, target, settings.s3_bucket_name)
            await self._upload(s3, settings, staged, encoded)
            await _discard(encoded)  # the payload is in S3 now: its spill file, if any, is not needed
            job_id = await _submit(service, request)
            region = await clients.region(target)
            self._record_handle({"service": settings.service, "job_id": job_id, "job_name": staged.job_name, "region": region})
            log.info("%s:%s submitted as %s job %s", dispatch_id, node_id, settings.service, job_id)
            logs = LogFollower(await clients.client("logs", target), service.log_group, service.log_stream_prefix(job_id, staged.job_name))
            # The dispatch's running jobs' archives are watched with one listing of its prefix.
            follower = JobFollower(service, job_id, settings, _Electron(self), logs, s3, staged.dispatch_prefix)
            status = await follower.follow()
            ended = True
            value = await self._collect(s3, status, settings, encoded.result_key, logs)
            if not settings.keep_artifacts:
                await _delete_artifacts(s3, staged)
            return value
        except asyncio.CancelledError:
            # The Covalent server is shutting down: its event loop cancels the running tasks. A job
            # left running would bill until max_runtime with nobody to collect its value.
            if job_id and not ended and service is not None and settings is not None:
                await _cancel_at_exit(service, job_id, settings, self._stderr)
            raise
        except Cancelled as e:
            raise TaskCancelledError(str(e)) from e
        except (TaskCancelledError, TaskRuntimeError):
            raise
        except FollowError as e:
            message = str(e)
            ended = True  # the follower has done what the job needed (cancelled it, or found it gone)
        except BYOCError as e:
            message = str(e)
        except (BotoCoreError, ClientError, OSError, RuntimeError, asyncio.TimeoutError) as e:
            message = f"{type(e).__name__}: {e}"
        finally:
            if encoded is not None:
                await _discard(encoded)
            reader = self.__dict__.get("_byoc_reader")
            if reader is not None and not reader.done() and "_byoc_pending" in self.__dict__ and not any(
                not f.done() for f in self._byoc_pending if f is not self.__dict__.get("_byoc_open_question")
            ):
                reader.cancel()  # only an unanswered cancel question is left: nobody needs its answer
        if job_id and not ended and service is not None:
            message += await _abandon(service, job_id)
        self._stderr(f"byoc executor: {message}\n")
        raise TaskRuntimeError(message)

    async def _upload(self, s3: Any, settings: Settings, staged: StagedTask, encoded: codec.EncodedTask) -> None:
        await storage.upload(s3, staged.payload, encoded.pieces(), staged.object_tags, settings.kms_key_id)
        if settings.service == "braket":
            await storage.put_bytes(s3, staged.source, _source_archive(), staged.object_tags, settings.kms_key_id)

    def _record_handle(self, handle: dict[str, Any]) -> None:
        """Give Covalent the job's handle (for ``cancel()``), retrying while its dispatcher is slow.

        It runs beside the following: a slow dispatcher must not hold up, let alone end, the job.
        """

        async def record() -> None:
            try:
                # Sent once: the dispatcher answers in order, however late (see _dispatcher_call).
                await self._dispatcher_call(Signals.PUT, ("job_handle", json.dumps(handle)), patience=HANDLE_PATIENCE)
            except (asyncio.TimeoutError, RuntimeError) as e:
                log.error("Covalent did not take the job handle of %s (%s): a cancel from Covalent reaches the job "
                          "only through run()", handle["job_id"], type(e).__name__)

        if "_send_queue" not in self.__dict__:
            return  # outside a Covalent dispatch (no runtime queues)
        task = asyncio.get_running_loop().create_task(record())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _collect(self, s3: Any, status: JobStatus, settings: Settings, result_key: str, logs: LogFollower) -> Any:
        """Turn a terminal job into the electron's value, or a TaskRuntimeError that says why."""
        try:
            outcome = await _fetch_outcome(s3, status, result_key)
        except ResourceNotFoundError:
            outcome = codec.JobOutcome(ok=False, has_result=False)
        if not outcome.has_result:
            # Nothing authenticated came back: the log's last lines are the diagnosis, and
            # CloudWatch delivers them seconds after they were written.
            await logs.settle()
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
        tail = "\n".join(list(logs.lines)[-LOG_TAIL_LINES:])
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
        return bool(await self._dispatcher_call(Signals.GET, "cancel_requested"))

    async def _cancel_requested_if_answered(self) -> bool:
        """The cancel question before submission: a dispatcher too slow to answer is a "no" (the
        follower asks again every second once the job exists)."""
        try:
            return await self._cancel_requested()
        except (asyncio.TimeoutError, RuntimeError) as e:
            log.warning("Covalent's dispatcher did not answer whether node was cancelled (%s); going on", type(e).__name__)
            return False

    async def _dispatcher_call(self, action: Signals, body: Any, patience: float = DISPATCHER_TIMEOUT) -> Any:
        """One request to Covalent's dispatcher over the executor's runtime queues.

        The dispatcher answers the requests in order. Covalent's own ``_notify_sync`` stops
        waiting after DISPATCHER_TIMEOUT seconds, but the answer still comes later and is then
        taken as the answer to the next request. Here each request has its own future, resolved
        in order by one reader: an answer that comes late resolves its own request, and a cancel
        question still unanswered is not asked again.

        Raises:
            asyncio.TimeoutError: no answer within ``patience`` seconds (the request stays pending).
            RuntimeError: the dispatcher failed to handle the request.
        """
        pending = self.__dict__.setdefault("_byoc_pending", collections.deque())
        question = (action, body) if action == Signals.GET else None
        answer = self.__dict__.get("_byoc_open_question") if question is not None else None
        if answer is None or answer.done():
            answer = asyncio.get_running_loop().create_future()
            pending.append(answer)
            self._notify(action, body)
            if question is not None:
                self._byoc_open_question = answer
            reader = self.__dict__.get("_byoc_reader")
            if reader is None or reader.done():
                self._byoc_reader = asyncio.get_running_loop().create_task(self._read_dispatcher_answers(pending))
        return await asyncio.wait_for(asyncio.shield(answer), patience)

    async def _read_dispatcher_answers(self, pending: collections.deque) -> None:
        while pending:
            ok, body = await self._recv_queue.get()
            answer = pending.popleft()
            if answer.done():
                continue
            if ok is False:
                answer.set_exception(RuntimeError("Covalent's dispatcher failed to handle a request of this executor"))
            else:
                answer.set_result(body)

    def _stdout(self, text: str) -> None:
        if text and self.task_stdout is not None:
            self.task_stdout.write(text)

    def _stderr(self, text: str) -> None:
        if text and self.task_stderr is not None:
            self.task_stderr.write(text)


class _Electron:
    """The node's side of following a job (``follow.Node``): its stderr, Covalent's cancel question."""

    def __init__(self, executor: BYOCExecutor):
        self._executor = executor

    def progress(self, line: str) -> None:
        self._executor._stderr(f"[byoc] {line}\n")

    async def cancel_requested(self) -> bool:
        return await self._executor._cancel_requested()


_background: set[asyncio.Task] = set()  # tasks that must not be garbage-collected while they run


def server_identity() -> str:
    """Which Covalent server follows this process's jobs: ``<host>:<dispatcher port>`` (the
    ``byoc:server`` tag, so that a restarted server can tell its own jobs from others')."""
    try:
        port = get_config("dispatcher.port")
    except KeyError:
        port = ""
    return f"{socket.gethostname()}:{port}"


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

    loop = asyncio.get_running_loop()
    give_up, pause = loop.time() + COLLECT_RETRY_FOR, 1.0
    try:
        while True:
            try:
                archive = await storage.download(s3, storage.S3Location.parse(status.results_uri), spill_file)
                break
            except (BYOCError, BotoCoreError, OSError, asyncio.TimeoutError) as e:
                # The result is safe in S3 either way; a passing condition is waited out.
                if policy.classify(e) is not policy.Verdict.TRANSIENT or loop.time() + pause > give_up:
                    raise
                log.warning("downloading the result of %s failed (%s); retrying", status.job_id, policy.describe(e))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 60.0)
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


async def _submit(service: JobService, request: dict[str, Any]) -> str:
    """Create the job, retrying what the policy calls transient: the create is idempotent (Braket's
    clientToken, SageMaker's name), so a retry whose first attempt took effect adopts that job."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SUBMIT_RETRY_FOR
    pause = 1.0
    while True:
        try:
            return await service.submit(request)
        except (BYOCError, BotoCoreError, OSError, asyncio.TimeoutError) as e:
            if policy.classify(e) is not policy.Verdict.TRANSIENT or loop.time() + pause > give_up:
                raise
            log.warning("creating the job failed (%s); retrying in %.0f s", policy.describe(e), pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)


async def _cancel_at_exit(service: JobService, job_id: str, settings: Settings, stderr: Callable[[str], None]) -> None:
    """The server is shutting down while ``job_id`` runs: cancel it, unless ``on_server_exit = "keep"``.

    Shielded, so the request is sent and answered before the task lets the loop close.
    """
    if settings.on_server_exit == "keep":
        log.warning("the Covalent server is stopping; job %s keeps running (on_server_exit = keep): "
                    "collect its value with `byoc-executor result %s`", job_id, job_id)
        return
    try:
        await asyncio.shield(asyncio.wait_for(service.cancel(job_id), EXIT_CANCEL_TIMEOUT))
        log.warning("the Covalent server is stopping: job %s was cancelled (on_server_exit = cancel)", job_id)
        stderr(f"byoc executor: the Covalent server stopped; {settings.service} job {job_id} was cancelled\n")
    except (BYOCError, BotoCoreError, OSError, asyncio.TimeoutError, asyncio.CancelledError) as e:
        log.error("the Covalent server is stopping and job %s could not be cancelled (%s): stop it yourself "
                  "(`byoc-executor cancel %s`)", job_id, e, job_id)


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
