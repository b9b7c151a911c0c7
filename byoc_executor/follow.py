"""Following one job from submission to its end: schedules, deadlines, the error policy applied.

A :class:`JobFollower` runs four schedules against one clock, each explicit and boring:

======================  ==========================================================================
schedule                when
======================  ==========================================================================
status (Describe/GetJob)  FIRST_POLL after submission, backing off x1.5 to ``poll_freq``. Once the
                        job runs, S3 is watched for its results archive and status calls are only a
                        safety net (a job that ends without an archive): WATCHED_FIRST_POLL, then
                        x2 to ``poll_freq``. When the archive appears, or a cancel is sent, status
                        is polled from FIRST_POLL again until the job is terminal. After a failed
                        call: backoff x2 to OUTAGE_POLL_MAX.
results watch (S3)      ``results_watch``: one listing of the dispatch's prefix for all its jobs.
logs (CloudWatch)       LOG_FIRST_READ after the job is seen running, then every LOG_POLL while it
                        prints, backing off to LOG_POLL_MAX while it is quiet; once more at the end.
cancel question         every CANCEL_CHECK seconds, Covalent's dispatcher is asked whether the node
                        was cancelled.
======================  ==========================================================================

Deadlines come from the job (settings): it may wait ``effective_queue_timeout`` seconds in the
queue, then run ``max_runtime`` (which the service enforces itself) plus RUN_SLACK. Past either,
the job is cancelled and the electron fails, naming the setting.

Failed calls are judged by ``policy.classify``: a transient condition is waited out (a long one
is reported as a ``[byoc]`` line), a definitive one ends the following with a ``FollowError``.
Nothing here cancels a job because a call failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError

from byoc_executor import clock, policy, results_watch, storage
from byoc_executor.errors import BYOCError, FollowError
from byoc_executor.joblogs import LogFollower
from byoc_executor.services import JobService, JobState, JobStatus
from byoc_executor.settings import Settings

log = logging.getLogger(__name__)

FIRST_POLL = 0.25  # seconds; status polling backs off from here to poll_freq
POLL_BACKOFF = 1.5
WATCHED_FIRST_POLL = 2.0  # the first status call after the job is seen running (S3 is watched)
WATCHED_POLL_BACKOFF = 2.0
OUTAGE_POLL_MAX = 60.0  # the longest pause between two status calls while they fail
OUTAGE_REPORT_AFTER = 30.0  # a failing condition is reported once it has lasted this long
OUTAGE_REPORT_EVERY = 600.0  # and again this often while it lasts
LOG_FIRST_READ = 5.0
LOG_POLL = 2.0
LOG_POLL_MAX = 30.0
CANCEL_CHECK = 1.0
CANCEL_RETRY_MAX = 30.0  # the longest pause between two attempts to send a cancel
CANCEL_WAIT = 300.0  # how long a cancelled job is followed to its end
RUN_SLACK = 3600.0  # past max_runtime, the service has had an hour to stop the job itself

# Errors a call can end with that the policy judges (anything else is a bug and propagates).
CALL_ERRORS = (BYOCError, BotoCoreError, OSError, asyncio.TimeoutError, RuntimeError)


class Node(Protocol):
    """What the follower needs from the electron it follows a job for (the executor)."""

    def progress(self, line: str) -> None:
        """Add a ``[byoc]`` line to the node's stderr."""

    async def cancel_requested(self) -> bool:
        """Whether Covalent cancelled the node. May raise one of CALL_ERRORS (a slow dispatcher)."""


class Cancelled(Exception):
    """Covalent cancelled the node, and the job was cancelled (or is being torn down)."""


@dataclass
class Outage:
    """A condition that keeps failing calls of one kind: since when, and when it was last reported."""

    what: str
    since: float
    reported: float | None = None
    failures: int = 0
    last_error: str = ""


@dataclass
class _Schedule:
    """One repeating action: when it is due next and how long its pause is now."""

    due: float
    interval: float

    def after(self, now: float, interval: float | None = None, jitter: bool = False) -> None:
        if interval is not None:
            self.interval = interval
        self.due = now + self.interval * (random.uniform(0.8, 1.0) if jitter else 1.0)


@dataclass
class JobFollower:
    """Follows one submitted job to a terminal status (see the module docstring).

    Args:
        service: the job API.
        job_id: the job's ARN (Braket) or name (SageMaker).
        settings: the executor's settings (poll_freq, deadlines).
        node: the electron's side: progress lines, the cancel question.
        logs: the job's log streams.
        s3: the S3 client the results watch lists with.
        group_prefix: the dispatch's key prefix (``StagedTask.dispatch_prefix``), shared by its jobs.
    """

    service: JobService
    job_id: str
    settings: Settings
    node: Node
    logs: LogFollower
    s3: Any
    group_prefix: str = ""
    last: JobState | None = None
    outages: dict[str, Outage] = field(default_factory=dict)

    async def follow(self) -> JobStatus:
        """Follow the job to its end and return its terminal status.

        Raises:
            Cancelled: Covalent cancelled the node (the job was cancelled).
            FollowError: a definitive answer (access denied, the job gone) or a deadline; the
                message says which, and whether the job was cancelled.
        """
        self._now = clock.now  # the loop's time (scaled only under an emulator's AWS profile)
        start = self._now()
        self._submitted = start
        self._status = _Schedule(start + FIRST_POLL, FIRST_POLL)
        self._logs = _Schedule(float("inf"), LOG_POLL)
        self._cancel_question = _Schedule(start, CANCEL_CHECK)
        self._running_since: float | None = None
        self._cancel_reason: str | None = None  # why a cancel is wanted (Covalent, a deadline)
        self._cancel_by_covalent = False
        self._cancel_sent: float | None = None
        self._cancel_attempt = _Schedule(float("inf"), 1.0)
        self._reported_events = 0
        self._queue_position = ""
        self._archive_seen = False
        self._results: storage.S3Location | None = None
        self._watcher: results_watch.ArchiveWatcher | None = None
        try:
            while True:
                now = self._now()
                if now >= self._status.due:
                    status = await self._status_step(now)
                    if status is not None and status.state.terminal:
                        return await self._ended(status)
                now = self._now()
                await self._watch_step(now)
                if now >= self._logs.due:
                    await self._logs_step(now)
                if self._cancel_reason is None and now >= self._cancel_question.due:
                    await self._cancel_question_step(now)
                self._deadline_step(now)
                if self._cancel_reason is not None and now >= self._cancel_attempt.due:
                    await self._cancel_step(now)
                await self._sleep()
        finally:
            if self._watcher is not None:
                self._watcher.close()

    # --- the schedules ------------------------------------------------------------------------------

    async def _status_step(self, now: float) -> JobStatus | None:
        try:
            status = await self.service.describe(self.job_id)
        except CALL_ERRORS as e:
            self._failed("status", e, now)
            self._status.after(now, min(max(self._status.interval * 2, 1.0), OUTAGE_POLL_MAX), jitter=True)
            return None
        self._recovered("status", now)
        self._results = storage.S3Location.parse(status.results_uri) if status.results_uri else None
        for event in status.progress[self._reported_events:]:
            self.node.progress(f"{self.settings.service} job {status.job_id}: {event}")
            log.info("job %s: %s", self.job_id, event)
        self._reported_events = max(self._reported_events, len(status.progress))
        if status.state is JobState.QUEUED and status.queue_position and status.queue_position != self._queue_position:
            self.node.progress(f"{self.settings.service} job {status.job_id}: queue position {status.queue_position}")
        self._queue_position = status.queue_position
        changed = status.state is not self.last
        if changed:
            log.info("job %s: %s (%s)", self.job_id, status.raw_status, status.detail)
        previous, self.last = self.last, status.state
        if status.state.terminal:
            return status
        if status.state in (JobState.RUNNING, JobState.CANCELLING, JobState.UNKNOWN) and self._running_since is None:
            self._running_since = now
            self._logs.after(now, LOG_FIRST_READ)  # a job just started has little to read yet
        if status.state is JobState.RUNNING and not self._archive_seen and self._cancel_sent is None:
            # S3 is watched for the end: status calls only catch an end without an archive.
            interval = min(max(self._status.interval * WATCHED_POLL_BACKOFF, WATCHED_FIRST_POLL), self.settings.poll_freq)
            self._status.after(now, interval, jitter=True)
        else:
            if changed and previous is not None and status.state is not JobState.RUNNING:
                self._status.interval = FIRST_POLL  # a change (CANCELLING) may bring the end soon
            self._status.after(now, jitter=True)
            self._status.interval = min(self._status.interval * POLL_BACKOFF, self.settings.poll_freq)
        return status

    async def _watch_step(self, now: float) -> None:
        watching = self.last is JobState.RUNNING and not self._archive_seen and self._results is not None
        if watching and self._watcher is None:
            self._watcher = results_watch.watch(self.s3, self._results, self.group_prefix, self.settings.poll_freq)  # type: ignore[arg-type]
        elif not watching and self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._watcher is not None and self._watcher.seen.is_set():
            self._watcher.close()
            self._watcher, self._archive_seen = None, True
            self._status.due, self._status.interval = now, FIRST_POLL  # the end is near

    async def _logs_step(self, now: float) -> None:
        lines = await self.logs.poll()
        for line in lines:
            log.info("job %s | %s", self.job_id, line)
        # A quiet job is read less and less often; one that prints, every LOG_POLL.
        self._logs.after(now, LOG_POLL if lines else min(self._logs.interval * POLL_BACKOFF, LOG_POLL_MAX))

    async def _cancel_question_step(self, now: float) -> None:
        # Covalent is a local process, not AWS: asked every CANCEL_CHECK wall seconds at any time scale.
        self._cancel_question.after(now, CANCEL_CHECK * clock.SCALE)
        try:
            asked = await self.node.cancel_requested()
        except CALL_ERRORS as e:  # Covalent's dispatcher did not answer in time: ask again later
            self._failed("cancel question", e, now)
            return
        self._recovered("cancel question", now)
        if asked:
            log.info("cancel requested: cancelling job %s", self.job_id)
            self._want_cancel("Covalent cancelled the node", by_covalent=True)

    def _deadline_step(self, now: float) -> None:
        if self._cancel_reason is not None:
            return
        waiting = self._running_since is None
        queue_timeout = self.settings.effective_queue_timeout
        if waiting and now - self._submitted > queue_timeout:
            self._want_cancel(
                f"job {self.job_id} was still {self.last.value if self.last else 'not seen'} after queue_timeout = "
                f"{queue_timeout} s; it was cancelled. Raise queue_timeout to wait longer"
            )
        elif not waiting and now - self._running_since > self.settings.max_runtime + RUN_SLACK:  # type: ignore[operator]
            self._want_cancel(
                f"job {self.job_id} was still {self.last.value if self.last else 'running'} {RUN_SLACK:.0f} s past "
                f"max_runtime = {self.settings.max_runtime} s, which the service should have enforced; it was cancelled"
            )

    def _want_cancel(self, reason: str, by_covalent: bool = False) -> None:
        self._cancel_reason, self._cancel_by_covalent = reason, by_covalent
        self._cancel_attempt.due, self._cancel_attempt.interval = self._now(), 1.0

    async def _cancel_step(self, now: float) -> None:
        if self._cancel_sent is None:
            try:
                await self.service.cancel(self.job_id)
            except CALL_ERRORS as e:
                verdict = policy.classify(e)
                if verdict is policy.Verdict.FATAL:
                    raise FollowError(
                        f"{self._cancel_reason}, but the cancel was refused ({policy.describe(e)}: {e}): stop job {self.job_id} yourself",
                        job_id=self.job_id,
                    ) from e
                self._failed("cancel", e, now)
                self._cancel_attempt.after(now, min(self._cancel_attempt.interval * 2, CANCEL_RETRY_MAX))
                return
            self._recovered("cancel", now)
            self._cancel_sent = now
            self._status.due, self._status.interval = now, FIRST_POLL  # follow it closely to its end
        if now - self._cancel_sent > CANCEL_WAIT:
            raise (Cancelled if self._cancel_by_covalent else FollowError)(
                f"job {self.job_id} was asked to cancel {CANCEL_WAIT:.0f} s ago and is still {self.last.value if self.last else 'unknown'}"
            )
        self._cancel_attempt.after(now, CANCEL_WAIT)  # wakes once more for the bound above

    async def _sleep(self) -> None:
        wake = min(self._status.due, self._logs.due, self._cancel_attempt.due if self._cancel_reason else float("inf"))
        if self._cancel_reason is None:
            wake = min(wake, self._cancel_question.due, self._next_deadline())
        delay = max(0.0, wake - self._now())
        if self._watcher is not None:
            await self._watcher.wait(delay)  # wakes early when the archive appears
        else:
            await clock.sleep(delay)

    def _next_deadline(self) -> float:
        if self._running_since is None:
            return self._submitted + self.settings.effective_queue_timeout + 0.01
        return self._running_since + self.settings.max_runtime + RUN_SLACK + 0.01

    async def _ended(self, status: JobStatus) -> JobStatus:
        for line in await self.logs.poll(final=True):
            log.info("job %s | %s", self.job_id, line)
        if self._cancel_reason is not None:
            if self._cancel_by_covalent:
                raise Cancelled(f"job {self.job_id} was cancelled ({status.raw_status})")
            raise FollowError(self._cancel_reason, job_id=self.job_id, status=status.raw_status)
        if status.state is JobState.CANCELLED:
            # Covalent may have cancelled the job itself (``cancel()`` on another executor
            # instance) between two of the cancel questions.
            try:
                if await self.node.cancel_requested():
                    raise Cancelled(f"job {self.job_id} was cancelled ({status.raw_status})")
            except CALL_ERRORS:
                pass
        return status

    # --- the policy applied -------------------------------------------------------------------------------

    def _failed(self, what: str, error: BaseException, now: float) -> None:
        """A call failed: wait it out if the policy says it passes, else end the following."""
        verdict = policy.classify(error) if what != "cancel question" else policy.Verdict.TRANSIENT
        if verdict is policy.Verdict.NOT_FOUND:
            if now - self._submitted <= policy.NOT_FOUND_WINDOW:
                verdict = policy.Verdict.TRANSIENT
            else:
                raise FollowError(
                    f"job {self.job_id} no longer exists ({policy.describe(error)}): it was deleted outside the executor, "
                    "and its result, if any, is under the task's S3 prefix",
                    job_id=self.job_id,
                ) from error
        if verdict is policy.Verdict.FATAL:
            raise FollowError(f"following job {self.job_id} failed: {policy.describe(error)}: {error}", job_id=self.job_id) from error
        outage = self.outages.get(what)
        if outage is None:
            outage = self.outages[what] = Outage(what, now)
        outage.failures += 1
        outage.last_error = f"{policy.describe(error)}"
        log.debug("%s of job %s failed (%s), retrying", what, self.job_id, error)
        # ``now`` is when the failed call began; it may have spent a minute in botocore's retries.
        lasted = self._now() - outage.since
        due = outage.reported is None and lasted >= OUTAGE_REPORT_AFTER
        if due or (outage.reported is not None and self._now() - outage.reported >= OUTAGE_REPORT_EVERY):
            outage.reported = self._now()
            self.node.progress(
                f"{self.settings.service} job {self.job_id}: {what} calls failing for {lasted:.0f} s "
                f"({outage.failures} attempts, last: {outage.last_error}); still following, the job is not affected"
            )
            log.warning("%s of job %s failing for %.0f s: %s", what, self.job_id, lasted, error)

    def _recovered(self, what: str, now: float) -> None:
        outage = self.outages.pop(what, None)
        if outage is not None and outage.reported is not None:
            self.node.progress(f"{self.settings.service} job {self.job_id}: {what} calls answer again after {self._now() - outage.since:.0f} s")
