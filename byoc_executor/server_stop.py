"""What a BYOC electron does when the Covalent server it runs in stops, and what a new server notices.

Covalent 0.240's server is uvicorn running FastAPI in one asyncio loop (``covalent_ui/app.py``).
What its shutdown gives a plugin, read in its source and measured (``bench/shutdown.py``, README
"When the Covalent server stops or dies"):

* uvicorn's signal handler only sets ``should_exit``; its main loop sees it within 0.1 s, stops
  accepting connections, sleeps 0.1 s, then waits, with no time limit, for the tasks in
  ``server.server_state.tasks`` (its requests' tasks) before it runs the app's lifespan shutdown.
* The lifespan shutdown (``covalent_dispatcher/_service/app.py``) calls ``cancel_all_with_status``:
  each running node is marked cancel-requested and the executor's ``cancel()`` is started in a
  background task that nobody awaits.
* Then uvicorn restores the signal handlers it replaced and raises the signal again. SIGINT
  (``covalent stop``) goes to asyncio's runner, which cancels every remaining task and runs the loop
  until they have handled it: ``run()`` sees ``CancelledError``. SIGTERM (``kill``, systemd, docker)
  has Python's default action: the process dies on the spot, 0.7-0.9 s after the signal here, and
  no task hears of it. Measured before this module: SIGINT, the job cancelled (request at +0.19 s)
  but the node left RUNNING in Covalent's database; SIGTERM, no cancel sent, the job left running.

So at an exit signal this module acts at once, for either signal: every electron following a job
has its ``run()`` task cancelled (its ``except CancelledError`` sends the shielded cancel, unless
``on_server_exit = "keep"``, and ends the node CANCELLED), and each such task is added to uvicorn's
``server_state.tasks``, which uvicorn waits for before the lifespan shutdown and the exit: the cancel
is sent and answered, and Covalent has recorded the node, before the process goes. An electron that
has not submitted its job yet is stopped as soon as it has (``ElectronGuard.submitted``), so no job
is created behind the stop. ``EXIT_WAIT`` bounds it all.

A task group (Covalent's managed execution, which 0.240 uses for every BYOC node) runs Covalent's own
code between ``send()`` and ``poll()``; a cancel there would end the task inside Covalent with nobody
to cancel the job (seen under load: the job left running). So the stop cancels the task only while
it follows the job (``ElectronGuard.interruptible``); otherwise ``poll()`` sees the stop before it
follows, cancels the job and notes why. Covalent records the nodes in another task, through
``receive()``: the server is held until that task has run (``hold_until_received``).

Outside uvicorn (tests calling ``execute()``, other hosts) nothing is installed: the
``CancelledError`` path of ``run()`` is then all there is.

A new server process, at its first BYOC electron, lists the jobs that carry its own ``byoc:server``
tag, still run and were created before it started: nobody follows them. It logs each, with the
commands that collect or stop it (``rescue.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
from typing import Any, Awaitable, Callable

from botocore.exceptions import BotoCoreError, ClientError
from covalent._shared_files.exceptions import TaskCancelledError

from byoc_executor import aws
from byoc_executor.errors import BYOCError

log = logging.getLogger(__name__)

EXIT_WAIT = 40.0
"""Seconds after an exit signal that the electrons are waited for; past it the ones still busy
(an upload that has not finished) are cancelled, and 5 s later uvicorn is let go regardless."""
EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # uvicorn's HANDLED_SIGNALS on POSIX
BRIDGE_WAIT = 10.0
"""Seconds a stopping server is held between a task group's ``poll()`` ending and Covalent's task
that records its nodes calling ``receive()`` (normally the next turns of the loop)."""


class ServerStop:
    """One event loop's view of the server's stop: the electrons following jobs, and the signal."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.stopping = False
        self.signalled_at: float | None = None
        self.guards: set[ElectronGuard] = set()
        self.uvicorn: Any = None
        """The uvicorn ``Server`` this loop runs, if any (found through its signal handler)."""
        self._held: set[asyncio.Task] = set()
        self._bridges: dict[Any, asyncio.Event] = {}
        self._install()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        server = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
        if not all(hasattr(server, name) for name in ("server_state", "should_exit", "handle_exit")):
            return  # not a uvicorn server's loop
        self.uvicorn = server
        for sig in EXIT_SIGNALS:
            previous = signal.getsignal(sig)
            if getattr(previous, "__self__", None) is server:
                # uvicorn restores its own saved handlers when it has shut down: this one lives
                # only as long as the server does.
                signal.signal(sig, functools.partial(_on_exit_signal, self, previous))
        log.debug("byoc-executor watches the Covalent server's exit signals")

    @property
    def in_server(self) -> bool:
        return self.uvicorn is not None

    def begin(self) -> None:
        """The server got an exit signal: stop every electron that follows a job (see module doc)."""
        if self.stopping:
            return
        self.stopping = True
        self.signalled_at = self.loop.time()
        if self.guards:
            log.warning("the Covalent server is stopping: %d BYOC electron(s) end now; the server waits for their "
                        "jobs' cancels (on_server_exit) for at most %.0f s", len(self.guards), EXIT_WAIT)
        for guard in list(self.guards):
            guard.server_stopping()
        self.loop.call_later(EXIT_WAIT, self._time_is_up)
        self.loop.call_later(EXIT_WAIT + 5.0, self._release)

    def hold(self, task: asyncio.Task) -> None:
        """Make uvicorn wait for ``task`` before its lifespan shutdown (and so before the exit)."""
        if self.uvicorn is None or task.done():
            return
        tasks = self.uvicorn.server_state.tasks
        tasks.add(task)
        self._held.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(self._held.discard)

    def hold_until_received(self, key: Any) -> None:
        """A task group's ``poll()`` ends because the server stops: hold uvicorn until Covalent's
        task that records the group's nodes has called ``receive()`` (``received(key)``).

        Covalent (``runner_ng``) records them in another task: ``poll()`` raising puts a READY event
        on a queue, whose listener starts a task that calls ``receive()`` and writes the database.
        Between the held ``poll()`` task ending and that task starting, uvicorn may find nothing
        to wait for and exit, SIGTERM then killing the process before the nodes' notes are written
        (seen under load: the node CANCELLED by Covalent's own shutdown, with no stderr).
        """
        if self.uvicorn is None:
            return
        event = self._bridges[key] = asyncio.Event()

        async def bridge() -> None:
            try:
                await asyncio.wait_for(event.wait(), BRIDGE_WAIT)
            except asyncio.TimeoutError:
                log.warning("the Covalent server is stopping and did not record task group %s within %.0f s", key, BRIDGE_WAIT)

        self.hold(self.loop.create_task(bridge()))

    def received(self, key: Any) -> None:
        """Covalent's recording task for ``key`` has begun: hold it (until its nodes are written),
        then let the bridge go."""
        event = self._bridges.pop(key, None)
        task = asyncio.current_task()
        if task is not None:
            self.hold(task)
        if event is not None:
            event.set()

    def _time_is_up(self) -> None:
        for guard in list(self.guards):
            if not guard.task.done():
                log.error("the Covalent server is stopping and a BYOC electron is still busy after %.0f s; "
                          "it is cancelled (its job, if it was created, is listed by `byoc-executor jobs --running`)", EXIT_WAIT)
                guard.task.cancel()

    def _release(self) -> None:
        if self.uvicorn is not None:
            for task in list(self._held):
                self.uvicorn.server_state.tasks.discard(task)


def _on_exit_signal(stop: ServerStop, previous: Callable, sig: int, frame: Any) -> None:
    previous(sig, frame)  # uvicorn's own handle_exit: its shutdown goes on as before
    stop.loop.call_soon_threadsafe(stop.begin)


_stops: dict[asyncio.AbstractEventLoop, ServerStop] = {}


def _stop_of(loop: asyncio.AbstractEventLoop) -> ServerStop:
    for stale in [other for other in _stops if other.is_closed()]:
        del _stops[stale]
    if loop not in _stops:
        _stops[loop] = ServerStop(loop)
    return _stops[loop]


class ElectronGuard:
    """One ``run()``'s link to the server's stop (``electron_started`` makes it)."""

    def __init__(self, stop: ServerStop, executor: Any, task: asyncio.Task | None):
        self.stop, self.executor, self.task = stop, executor, task
        self.job_id = ""
        self.closed = False
        self.interruptible = True
        """Whether the server's stop may cancel the task now. A task group's task runs Covalent's own
        code between ``send()`` and ``poll()`` (it records the nodes RUNNING): a cancel there would
        end the task inside Covalent, with nobody to cancel the job. ``poll()`` checks the stop
        before following instead."""

    @property
    def stopping(self) -> bool:
        """Whether the server is stopping (an exit signal was seen)."""
        return self.stop.stopping

    def submitted(self, job_id: str) -> None:
        """The electron's job exists. If the server is already stopping, end the electron now.

        Raises:
            asyncio.CancelledError: the server is stopping; ``run()`` cancels the job (or keeps it).
        """
        self.job_id = job_id
        if self.stop.stopping:
            if self.task is not None:
                self.stop.hold(self.task)
            raise asyncio.CancelledError("the Covalent server is stopping")

    def server_stopping(self) -> None:
        if self.closed or self.task is None or self.task.done():
            return
        self.stop.hold(self.task)
        if self.job_id and self.interruptible:
            self.task.cancel("the Covalent server is stopping")
        # Not submitted yet: ``submitted()`` ends it the moment its job exists. Between a group's
        # ``send()`` and ``poll()``: ``poll()`` ends it before following.

    def cancelled(self, job_id: str) -> TaskCancelledError:
        """The error that ends the node CANCELLED when the server stops, with a note on its stderr."""
        if job_id and getattr(self.executor, "on_server_exit", "cancel") == "keep":
            self.executor._stderr(
                f"byoc executor: the Covalent server stopped; job {job_id} keeps running (on_server_exit = keep): "
                f"collect its value with `byoc-executor result {job_id}`\n"
            )
        if self.stop.signalled_at is not None:
            log.info("a BYOC electron (job %s) ended %.3f s after the exit signal", job_id or "not created",
                     self.stop.loop.time() - self.stop.signalled_at)
        if self.task is not None and self.task.cancelling():
            self.task.uncancel()  # the cancellation is handled: the node's end goes on to be recorded
        return TaskCancelledError(f"the Covalent server stopped while job {job_id or '(none yet)'} ran")

    async def after_recorded(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """``after_recorded(cleanup)`` for this electron's task."""
        await _after_task(self.stop, self.task, cleanup)

    def close(self) -> None:
        """``run()`` is over (whatever Covalent does next with its task is not ours to stop)."""
        self.closed = True
        self.stop.guards.discard(self)


async def after_recorded(cleanup: Callable[[], Awaitable[None]]) -> None:
    """Run ``cleanup`` (deleting the task's artifacts) once Covalent has recorded the node's value.

    In a Covalent server, the current task is the dispatcher's (the runner task of ``run()``, the
    result task of ``receive()``), which writes the node's result to Covalent's database after the
    executor returns: the clean-up waits for that task to end well. If it is cancelled or fails
    (the server stops or dies in between), the artifacts stay, and ``byoc-executor result`` still
    reads the value. Outside a server, nothing records the value later: the clean-up runs now.
    """
    loop = asyncio.get_running_loop()
    await _after_task(_stop_of(loop), asyncio.current_task(), cleanup)


async def _after_task(stop: "ServerStop", task: asyncio.Task | None, cleanup: Callable[[], Awaitable[None]]) -> None:
    if not stop.in_server or task is None:
        await cleanup()
        return
    loop = stop.loop

    def recorded(done: asyncio.Task) -> None:
        if done.cancelled() or done.exception() is not None or loop.is_closed():
            log.warning("the node's result may not have been recorded by Covalent; its artifacts stay in S3")
            return
        cleanup_task = loop.create_task(cleanup())
        _background.add(cleanup_task)
        cleanup_task.add_done_callback(_background.discard)

    task.add_done_callback(recorded)


def electron_started(executor: Any) -> ElectronGuard:
    """The hook at the start of ``run()``: register the electron with the server's stop, and once
    per process and AWS target, look for jobs an earlier server process left with no follower."""
    loop = asyncio.get_running_loop()
    stop = _stop_of(loop)
    guard = ElectronGuard(stop, executor, asyncio.current_task())
    stop.guards.add(guard)
    if stop.in_server:
        _look_for_orphans(executor)
    return guard


def _stopping() -> "ServerStop | None":
    """This loop's server stop, if the server got an exit signal (None outside a loop, or before)."""
    try:
        stop = _stops.get(asyncio.get_running_loop())
    except RuntimeError:
        return None
    return stop if stop is not None and stop.stopping else None


def received(key: Any) -> None:
    """``receive()`` of a task group cancelled by the server's stop has begun (``ServerStop.received``)."""
    stop = _stopping()
    if stop is not None:
        stop.received(key)


def stopping_now() -> bool:
    """Whether the Covalent server running this loop got an exit signal."""
    return _stopping() is not None


def keeps_job(executor: Any) -> bool:
    """Whether ``cancel()`` must leave the job alone: the server is stopping and the electron asked
    to keep its job (Covalent's own shutdown cancels every running node through ``cancel()``)."""
    return stopping_now() and getattr(executor, "on_server_exit", "cancel") == "keep"


# --- a new server: jobs of an earlier process of this server that nobody follows ------------------------

_scanned: set[aws.AWSTarget] = set()
_background: set[asyncio.Task] = set()


def _look_for_orphans(executor: Any) -> None:
    try:
        target = aws.AWSTarget.of(executor.settings())
    except BYOCError:
        return
    if target in _scanned:
        return
    _scanned.add(target)
    task = asyncio.get_running_loop().create_task(log_orphans(target))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def log_orphans(target: aws.AWSTarget) -> list:
    """Log every job tagged with this server's identity that still runs and was created before this
    process started: the server that followed it is gone. Returns the jobs found."""
    import psutil

    from byoc_executor import rescue
    from byoc_executor.byoc import server_identity
    from byoc_executor.pipeline import job_label

    identity = server_identity()
    started = psutil.Process().create_time()
    found = []
    for service in rescue.SERVICES:
        try:
            jobs = await rescue.list_jobs(target, services=(service,), running=True, server=identity, created_before=started, details=False)
        except (BYOCError, BotoCoreError, ClientError, OSError, asyncio.TimeoutError) as e:
            log.info("could not look for %s jobs left running by an earlier process of this server: %s", service, e)
            continue
        for job in jobs:
            found.append(job)
            log.warning(
                "%s job %s (dispatch %s, node %s) was started by an earlier process of this Covalent server (%s) and is "
                "still %s with nobody following it: collect its value with `byoc-executor result %s` once it ends, "
                "or stop it with `byoc-executor cancel %s`",
                job.service, job_label(job.job_name, job.job_id), job.dispatch, job.node, identity, job.raw_status,
                job.job_id, job.job_id,
            )
    return found
