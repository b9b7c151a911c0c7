"""The Covalent plugin: ``BYOCExecutor`` runs each electron, or task group, as one Braket hybrid job or SageMaker training job.

Covalent finds this module through the ``covalent.executor.executor_plugins`` entry point; its
last dotted name, ``byoc``, is the executor's short name and the ``[executors.byoc]`` section of
covalent.conf. Every key of that section is a constructor argument (see ``settings.py``).

Two ways in, one pipeline (``pipeline.py``):

- ``run()``: one electron, as Covalent's legacy runner and ``execute()`` call it: check the
  settings, pickle the task, upload it, submit one job, follow it, fetch and verify the result.
- ``send()`` / ``poll()`` / ``receive()`` (``SUPPORTS_MANAGED_EXECUTION``): what Covalent 0.240's
  runner uses for every task group, one node or several packed together (``managed.py``).

Covalent's helper nodes (``x[0]``, ``a, b = x``, ``x.attr``, lists and dicts of electrons) never
start a job: they run in the server (``helper_nodes.py``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError
from covalent._shared_files.config import get_config
from covalent._shared_files.exceptions import TaskCancelledError, TaskRuntimeError
from covalent.executor.base import AsyncBaseExecutor
from covalent.executor.schemas import ResourceMap, TaskSpec, TaskUpdate
from covalent.executor.utils import Signals

from byoc_executor import codec, helper_nodes, managed, pipeline, server_stop
from byoc_executor.errors import BYOCError, FollowError, ResourceNotFoundError, ResultError
from byoc_executor.follow import Cancelled
from byoc_executor.joblogs import LogFollower
from byoc_executor.services import JobState, JobStatus
from byoc_executor.settings import SETTING_NAMES, Settings, defaults

EXECUTOR_PLUGIN_NAME = "BYOCExecutor"
_EXECUTOR_PLUGIN_DEFAULTS = defaults()

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
DISPATCHER_TIMEOUT = 5.0  # Covalent's own wait for an answer of its dispatcher (executor/base.py)
HANDLE_PATIENCE = 3600.0  # how long the job handle's answer is awaited (beside the following)
# What a failed call can raise that is ours to report (anything else is a bug and propagates).
_REPORTED = (BotoCoreError, ClientError, OSError, RuntimeError, asyncio.TimeoutError)



def server_identity() -> str:
    """``pipeline.server_identity()`` (the ``byoc:server`` tag of this process's jobs)."""
    return pipeline.server_identity()


def _source_archive() -> bytes:
    """``pipeline.source_archive()``: the Braket source archive, for tests and tools."""
    return pipeline.source_archive()


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

    # -- one electron: run() ------------------------------------------------------------------------

    async def run(self, function: Callable, args: list, kwargs: dict, task_metadata: dict) -> Any:
        """Run one electron as one job and return its value.

        Raises:
            TaskRuntimeError: the task raised, the job failed, or its result could not be verified;
                the node's stderr says which and why.
            TaskCancelledError: Covalent cancelled the node; the job was cancelled too.
        """
        dispatch_id, node_id = task_metadata["dispatch_id"], task_metadata["node_id"]
        encoded: codec.EncodedTask | None = None
        job: pipeline.Job | None = None
        ended = False
        stop = server_stop.electron_started(self)  # the server's stop ends this electron at once
        try:
            settings = self.settings()
            await pipeline.check_settings(settings)
            if helper_nodes.wrapped_helper_kind(function) is not None:
                try:  # Covalent's own x[0], x.attr, [a, b]: no job
                    return await asyncio.to_thread(helper_nodes.run_helper, function.args[0], args, kwargs)
                except helper_nodes.HelperUnavailable as e:
                    log.info("node %s: a helper whose input cannot be unpickled here (%s) runs as a job", node_id, e)
            if await self._cancel_requested_if_answered():
                raise TaskCancelledError(f"node {node_id} was cancelled before its job was submitted")
            encoded = await asyncio.to_thread(codec.encode_task, function, args, kwargs)
            electron = _Electron(self)
            job = await pipeline.launch(settings, dispatch_id, node_id, encoded, say=electron.progress, node=electron)
            stop.submitted(job.job_id)  # a stop that came meanwhile ends the electron now
            self._record_handle(job.handle)
            logs = pipeline.log_follower(job)
            status = await pipeline.follow(job, _Electron(self), logs)
            ended = True
            value = await self._collect(job, status, logs)
            await pipeline.delete_artifacts_once_recorded(job)
            return value
        except asyncio.CancelledError:
            # The Covalent server is shutting down (server_stop cancels this task at its signal, or
            # the loop cancels it at its end). A job left running would bill until max_runtime.
            if job is not None and not ended:
                await pipeline.cancel_at_exit(job, self._stderr)
            if stop.stopping:
                raise stop.cancelled(job.job_id if job is not None else "") from None  # the node ends CANCELLED
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
        except _REPORTED as e:
            message = f"{type(e).__name__}: {e}"
        finally:
            stop.close()
            if encoded is not None:
                await pipeline.discard(encoded)
            self._stop_reading_dispatcher()
        if job is not None and not ended:
            message += await pipeline.abandon(job)
        self._stderr(f"byoc executor: {message}\n")
        raise TaskRuntimeError(message)

    async def _collect(self, job: pipeline.Job, status: JobStatus, logs: LogFollower) -> Any:
        """Turn a terminal job into the electron's value, or a TaskRuntimeError that says why."""
        outcome = await self._outcome(job, status, logs)
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
            self._stderr(f"\nThe electron raised {exc.get('type')} in {job.settings.service} job {status.job_id}:\n{exc.get('traceback', '')}")
            if status.failure_reason and exc.get("type", "").endswith("JobStopped"):
                # The service stopped the task (e.g. its maximum runtime): its reason is the news.
                self._stderr(f"byoc executor: {job.settings.service} job {status.job_id} ended {status.raw_status}: {status.failure_reason}\n")
            raise TaskRuntimeError(f"{exc.get('type')}: {exc.get('message')}")
        message = _no_result(job, status, logs)
        self._stderr(message)
        raise TaskRuntimeError(message.splitlines()[0].removeprefix("byoc executor: "))

    async def _outcome(self, job: pipeline.Job, status: JobStatus, logs: LogFollower) -> codec.JobOutcome:
        """The verified outcome; an outcome without a result when the job left no archive."""
        try:
            outcome = await pipeline.fetch_outcome(job, status)
        except ResourceNotFoundError:
            outcome = codec.JobOutcome(ok=False, has_result=False)
        if not outcome.has_result:
            # Nothing authenticated came back: the log's last lines are the diagnosis, and
            # CloudWatch delivers them seconds after they were written.
            await logs.settle()
        return outcome

    # -- task groups: Covalent's managed execution ----------------------------------------------------

    SUPPORTS_MANAGED_EXECUTION = True

    def get_upload_uri(self, task_group_metadata: dict, object_key: str) -> str:
        """Where Covalent puts one of the group's assets before ``send()``: a file of this process."""
        return managed.upload_uri(task_group_metadata["dispatch_id"], task_group_metadata["task_group_id"], object_key)

    async def send(self, task_specs: list[TaskSpec], resources: ResourceMap, task_group_metadata: dict) -> dict:
        """Start the task group: in the server if it is all Covalent helper nodes, else as one job.

        Returns:
            What ``poll()`` and ``receive()`` need (kept in this process's memory by Covalent).

        Raises:
            TaskCancelledError: Covalent cancelled the group before its job was submitted.
            Exception: the group could not be started (its nodes FAILED with the message).
        """
        dispatch_id, group_id = task_group_metadata["dispatch_id"], task_group_metadata["task_group_id"]
        # send() and poll() run in one task of Covalent's runner: the server's stop ends it at once.
        stop = self._byoc_stop = server_stop.electron_started(self)
        settings = self.settings()
        await pipeline.check_settings(settings)
        managed.sweep()
        tasks, inputs = await asyncio.to_thread(managed.assemble, task_specs, resources)
        if await asyncio.to_thread(managed.all_helpers, tasks):
            try:
                outcomes = await asyncio.to_thread(managed.run_helpers, tasks, inputs)
                managed.forget(dispatch_id, group_id)
                stop.close()
                return {"mode": "server", "outcomes": outcomes}
            except helper_nodes.HelperUnavailable as e:
                log.info("task group %s: helpers whose inputs cannot be unpickled here (%s) run as a job", group_id, e)
        if await self._cancel_requested_if_answered():
            raise TaskCancelledError(f"task group {group_id} was cancelled before its job was submitted")
        encoded = await asyncio.to_thread(codec.encode_group, dispatch_id, tasks, inputs)
        try:
            said: list[str] = []  # [byoc] lines of the launch (a wait for the quota), shown with the group's
            job = await pipeline.launch(settings, dispatch_id, group_id, encoded, say=said.append, node=_Electron(self))
        except Cancelled as e:  # cancelled while its job waited for the instance quota: no job exists
            stop.close()
            raise TaskCancelledError(str(e)) from e
        except BaseException:
            stop.close()
            raise
        finally:
            await pipeline.discard(encoded)
            managed.forget(dispatch_id, group_id)
        try:
            stop.submitted(job.job_id)
        except asyncio.CancelledError:
            # The server is stopping. poll(), which Covalent calls next, cancels the job (or keeps
            # it) and says so on the nodes' stderr: a TaskCancelledError raised here would end the
            # nodes CANCELLED with no word of their job (runner_ng records no stderr for send()).
            pass
        stop.interruptible = False  # Covalent's own code runs until poll(), which checks the stop first
        self._record_handle(job.handle)
        return {"mode": "job", "job": job, "nodes": [t["node_id"] for t in tasks], "said": said}

    async def poll(self, task_group_metadata: dict, data: dict) -> dict:
        """Follow the group's job to its end. Returns what ``receive()`` needs.

        Raises:
            TaskCancelledError: Covalent cancelled the group (the job was cancelled).
        """
        if data.get("mode") != "job":
            return data
        job: pipeline.Job = data["job"]
        lines: list[str] = list(data.get("said", []))
        node = _Electron(self, lines.append)
        logs = pipeline.log_follower(job)
        stop = self.__dict__.get("_byoc_stop") or server_stop.electron_started(self)
        try:
            if stop.stopping:  # the server's stop came between send() and poll()
                raise asyncio.CancelledError("the Covalent server is stopping")
            stop.interruptible = True
            try:
                status = await pipeline.follow(job, node, logs)
            finally:
                stop.interruptible = False  # the job has ended: collecting its value is not interrupted
        except asyncio.CancelledError:
            await pipeline.cancel_at_exit(job, lines.append)
            if stop.stopping:
                if job.settings.on_server_exit == "keep":
                    lines.append(f"byoc executor: the Covalent server stopped; job {job.job_id} keeps running (on_server_exit = keep): "
                                 f"collect its value with `byoc-executor result {job.staged.job_name}`\n")
                self._note_cancelled(task_group_metadata, lines)
                # Covalent records the nodes in another task, through receive(): the server waits for it.
                stop.stop.hold_until_received((task_group_metadata["dispatch_id"], task_group_metadata["task_group_id"]))
                raise stop.cancelled(job.job_id) from None  # Covalent ends the group's nodes CANCELLED
            raise
        except Cancelled as e:
            self._note_cancelled(task_group_metadata, lines)
            raise TaskCancelledError(str(e)) from e
        except (FollowError, BYOCError) as e:
            return {**data, "status": None, "error": f"byoc executor: {e}\n", "lines": lines}
        except _REPORTED as e:
            message = f"{type(e).__name__}: {e}" + await pipeline.abandon(job)
            return {**data, "status": None, "error": f"byoc executor: {message}\n", "lines": lines}
        finally:
            stop.close()
            self._stop_reading_dispatcher()
        try:
            outcome = await self._outcome(job, status, logs)
        except BYOCError as e:
            return {**data, "status": status, "error": f"byoc executor: {e}\n", "lines": lines}
        return {**data, "status": status, "outcome": outcome, "logs": list(logs.lines), "lines": lines}

    async def receive(self, task_group_metadata: dict, data: dict | None) -> list[TaskUpdate]:
        """Each node's status, and its output, stdout and stderr as files Covalent copies in."""
        dispatch_id, group_id = task_group_metadata["dispatch_id"], task_group_metadata["task_group_id"]
        node_ids = list(task_group_metadata["node_ids"])
        if data is None:
            server_stop.received((dispatch_id, group_id))  # a stopping server waits for this task to record them
            return await asyncio.to_thread(managed.cancelled_updates, dispatch_id, group_id, node_ids)
        if data["mode"] == "server":
            return await asyncio.to_thread(managed.task_updates, dispatch_id, group_id, node_ids, data["outcomes"])
        job: pipeline.Job = data["job"]
        said = "".join(f"[byoc] {line}\n" for line in data.get("lines", []))
        if "error" in data:
            return await asyncio.to_thread(managed.task_updates, dispatch_id, group_id, node_ids, None, said + data["error"])
        status: JobStatus = data["status"]
        outcome: codec.JobOutcome = data["outcome"]
        if outcome.has_result and outcome.tasks is not None:
            if status.state is not JobState.COMPLETED and all(t["status"] == "COMPLETED" for t in outcome.tasks):
                said += f"byoc executor: job {status.job_id} ended {status.raw_status} although its tasks returned: {status.failure_reason}\n"
                return await asyncio.to_thread(managed.task_updates, dispatch_id, group_id, node_ids, None, said)
            updates = await asyncio.to_thread(managed.task_updates, dispatch_id, group_id, node_ids, outcome.tasks, said)
            # Deleted once Covalent's task that called receive() has copied the outputs in and recorded them.
            await pipeline.delete_artifacts_once_recorded(job)
            return updates
        tail = LogFollower(None, "", "")
        tail.lines.extend(data.get("logs", []))
        if outcome.has_result:
            said += "byoc executor: the job's result is not a task group's (an image of another release?)\n"
        else:
            said += (outcome.stdout + outcome.stderr) + _no_result(job, status, tail)
        return await asyncio.to_thread(managed.task_updates, dispatch_id, group_id, node_ids, None, said)

    def _note_cancelled(self, task_group_metadata: dict, lines: list[str]) -> None:
        text = "".join(line if line.startswith("byoc executor:") else f"[byoc] {line}\n" for line in lines)
        managed.note_cancelled(task_group_metadata["dispatch_id"], task_group_metadata["task_group_id"], text)

    # -- cancel -----------------------------------------------------------------------------------------

    async def cancel(self, task_metadata: dict, job_handle: Any) -> bool:
        """Cancel the job behind ``job_handle`` (called by Covalent on a fresh executor instance).

        Returns:
            True when the cancel request was accepted (or the job had already ended).
        """
        if not job_handle:
            return True  # nothing was submitted; run() and send() see the request before they submit
        if server_stop.keeps_job(self):
            return False  # the server is stopping and on_server_exit = "keep": the job runs on
        settings = self.settings()
        if isinstance(job_handle, dict) and job_handle.get("region"):
            settings.region = job_handle["region"]
        service = await pipeline.service_for(settings)
        try:
            await service.cancel(job_handle["job_id"])
        except BYOCError:
            log.exception("could not cancel job %s", job_handle)
            return False
        return True

    # -- Covalent's dispatcher ------------------------------------------------------------------------------

    def _record_handle(self, handle: dict[str, Any]) -> None:
        """Give Covalent the job's handle (for ``cancel()``), while its dispatcher may be slow.

        It runs beside the following: a slow dispatcher must not hold up, let alone end, the job.
        """

        async def record() -> None:
            try:
                # Sent once: the dispatcher answers in order, however late (see _dispatcher_call).
                await self._dispatcher_call(Signals.PUT, ("job_handle", json.dumps(handle)), patience=HANDLE_PATIENCE)
            except (asyncio.TimeoutError, RuntimeError) as e:
                log.error("Covalent did not take the job handle of %s (%s): a cancel from Covalent reaches the job "
                          "only through its follower", handle["job_id"], type(e).__name__)

        if "_send_queue" not in self.__dict__:
            return  # outside a Covalent dispatch (no runtime queues)
        task = asyncio.get_running_loop().create_task(record())
        pipeline._background.add(task)
        task.add_done_callback(pipeline._background.discard)

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
            log.warning("Covalent's dispatcher did not answer whether the node was cancelled (%s); going on", type(e).__name__)
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
        is_question = action == Signals.GET
        answer = self.__dict__.get("_byoc_open_question") if is_question else None
        if answer is None or answer.done():
            answer = asyncio.get_running_loop().create_future()
            pending.append(answer)
            self._notify(action, body)
            if is_question:
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

    def _stop_reading_dispatcher(self) -> None:
        """At the end of an electron: stop the reader if all that is left is a cancel question
        nobody needs the answer to (a job handle still unanswered keeps it going)."""
        reader = self.__dict__.get("_byoc_reader")
        open_question = self.__dict__.get("_byoc_open_question")
        if reader is not None and not reader.done() and not any(
            not f.done() for f in self.__dict__.get("_byoc_pending", ()) if f is not open_question
        ):
            reader.cancel()

    def _stdout(self, text: str) -> None:
        if text and self.task_stdout is not None:
            self.task_stdout.write(text)

    def _stderr(self, text: str) -> None:
        if text and self.task_stderr is not None:
            self.task_stderr.write(text)


class _Electron:
    """The node's side of following a job (``follow.Node``): its stderr, Covalent's cancel question.

    Args:
        say: where ``[byoc]`` lines go; the node's stderr by default (a task group collects them).
    """

    def __init__(self, executor: BYOCExecutor, say: Callable[[str], None] | None = None):
        self._executor = executor
        self._say = say

    def progress(self, line: str) -> None:
        if self._say is not None:
            self._say(line)
        else:
            self._executor._stderr(f"[byoc] {line}\n")

    async def cancel_requested(self) -> bool:
        return await self._executor._cancel_requested()


def _no_result(job: pipeline.Job, status: JobStatus, logs: LogFollower) -> str:
    """What the node's stderr says of a job that ended without an authenticated result."""
    if status.state is JobState.COMPLETED:
        raise ResultError(f"job {status.job_id} completed but left no result at {status.results_uri}", job_id=status.job_id)
    tail = "\n".join(list(logs.lines)[-LOG_TAIL_LINES:])
    reason = status.failure_reason or "(the service gave no reason)"
    message = f"byoc executor: {job.settings.service} job {status.job_id} ended {status.raw_status}: {reason}\n"
    if tail:
        message += f"Last lines of the job's log ({status.log_group}):\n{tail}\n"
    return message


def _config_section() -> dict[str, Any]:
    # In-memory: Covalent read covalent.conf when it was imported.
    try:
        section = get_config("executors.byoc")
    except KeyError:
        return {}
    return section if isinstance(section, dict) else {}


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
