"""Watching S3 for jobs' results archives: one listing per dispatch, however many jobs it runs.

A running job's end shows first in S3: the service uploads the job's results archive before it
reports the job ended, and S3's request-rate limits are far above the job APIs'. Asking about each
archive on its own (HeadObject) costs one request per job per check. The archives of one
dispatch's jobs all live under that dispatch's prefix (``<s3_prefix>/<dispatch>/node-<n>/...``),
so one ListObjectsV2 of the prefix answers for all of them at once.

Times are in the executor's clock (``clock.py``: the loop's, scaled only under an emulator's AWS
profile). A :class:`PrefixWatch` keeps the jobs (:class:`ArchiveWatcher`) waiting under one prefix. It lists
the prefix when the earliest of them is due; every watcher learns from every listing, and each
one's next check comes its own pause after the latest listing. A watcher's pause starts at
``FIRST_CHECK``, grows by ``BACKOFF`` to ``MAX_PAUSE``, then to ``AGE_SHARE`` of the time it has
been watching, never past ``WATCH_MAX_PAUSE`` (2 s) or the executor's ``poll_freq``. With one job the requests are those of one HeadObject per check; with
many, the group is checked as often as its most impatient member, at the cost of one job.

A failed check finds nothing and costs the watchers nothing but time: the watch goes on, and their
jobs' status calls still see the end (see ``BYOCExecutor._follow``). Where listing the prefix is
denied (a bucket policy that grants reads but not ``s3:ListBucket``; remembered per client), or
takes more pages than there are jobs waiting, the group asks about each due job's archive with
HeadObject instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from botocore.exceptions import BotoCoreError

from byoc_executor import clock
from byoc_executor.errors import AWSError
from byoc_executor.storage import S3Location, exists, list_keys

log = logging.getLogger(__name__)

FIRST_CHECK = 0.5  # seconds from the start of watching (the job seen running) to the first check
BACKOFF = 1.5
MAX_PAUSE = 0.6  # the longest pause between two checks of a young job (under 12 s: past that, AGE_SHARE rules)
AGE_SHARE = 0.05  # past MAX_PAUSE, the pause grows to this share of the job's time watched
WATCH_MAX_PAUSE = 2.0
"""The longest pause between two checks (or ``poll_freq``, if shorter). Every second a finished job's
end goes unseen delays what depends on it, and a warm pool or the next job waits; a listing costs
$0.005 per 1,000 (S3 Standard LIST requests, us-east-1 list price), so one every 2 s is under a
cent an hour for a whole dispatch. (It was ``poll_freq``: 10 s by default, which only loopback CPU
justified; the AWS-profile benchmark, ``bench/aws_workflows.py``, measured what it cost.)"""
_DENIED = {"AccessDenied", "AllAccessDisabled"}


class ArchiveWatcher:
    """One job's wait for its results archive. ``seen`` is set once the archive exists."""

    def __init__(self, group: PrefixWatch, key: str, poll_freq: float, now: float):
        self.key = key
        self.seen = asyncio.Event()
        self._group = group
        self._since = now
        self._pause = FIRST_CHECK
        self._cap = max(min(poll_freq, WATCH_MAX_PAUSE), MAX_PAUSE)
        self.due = now + FIRST_CHECK

    def checked(self, now: float) -> None:
        """A listing without the archive ended at ``now``: schedule this watcher's next check."""
        limit = min(max(MAX_PAUSE, AGE_SHARE * (now - self._since)), self._cap)
        self._pause = min(self._pause * BACKOFF, limit)
        self.due = now + self._pause * random.uniform(0.8, 1.0)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the archive. Returns whether it has been seen."""
        if not self.seen.is_set() and timeout > 0:
            await _wait_for_event(self.seen, clock.wall(timeout))
        return self.seen.is_set()

    def close(self) -> None:
        """Stop watching (the job ended, or its follower gave up). Idempotent."""
        self._group.discard(self)


class PrefixWatch:
    """The watchers under one S3 prefix, served by one listing loop while any of them waits."""

    def __init__(self, s3: Any, bucket: str, prefix: str):
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self._watchers: set[ArchiveWatcher] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._warned = False
        # HeadObject per archive instead of listings: listing was refused, or costs more pages than jobs.
        self._head_only = (s3, bucket, prefix) in _denied
        self.listings = 0  # how many listings were made (for diagnostics and tests)

    def add(self, key: str, poll_freq: float) -> ArchiveWatcher:
        loop = asyncio.get_running_loop()
        watcher = ArchiveWatcher(self, key, poll_freq, clock.now())
        self._watchers.add(watcher)
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"byoc-watch-s3://{self.bucket}/{self.prefix}")
        return watcher

    def discard(self, watcher: ArchiveWatcher) -> None:
        self._watchers.discard(watcher)
        if not self._watchers:
            self._forget()
            self._changed.set()  # let the loop see that nobody waits any more

    def _forget(self) -> None:
        """Leave the registry (if still in it), so that the next watcher starts a new group."""
        key = (self._s3, self.bucket, self.prefix)
        if _groups.get(key) is self:
            del _groups[key]

    async def _run(self) -> None:
        try:
            while self._watchers:
                delay = min(w.due for w in self._watchers) - clock.now()
                if delay > 0:
                    # A new watcher may be due sooner than the current earliest: wake for it too.
                    self._changed.clear()
                    await _wait_for_event(self._changed, clock.wall(delay))
                    continue
                started = clock.now()
                asked = [w for w in self._watchers if w.due <= started] if self._head_only else list(self._watchers)
                try:
                    keys = await (self._head(asked) if self._head_only else self._list(len(asked)))
                except Exception:  # noqa: BLE001 - this loop serves every job of the dispatch
                    # An error nobody expected must not end the watch for every job silently:
                    # say it, and count it as a check that found nothing.
                    log.exception("watching s3://%s/%s for results failed", self.bucket, self.prefix)
                    keys = None
                now = clock.now()
                for watcher in asked:
                    if watcher not in self._watchers:
                        continue  # it left while S3 was asked
                    if keys is not None and watcher.key in keys:
                        watcher.seen.set()
                        self._watchers.discard(watcher)
                    else:
                        watcher.checked(now)
        finally:
            self._forget()

    async def _list(self, watching: int) -> set[str] | None:
        """Every key under the prefix, or None when S3 could not be asked this time.

        A prefix whose listing takes more pages than there are jobs waiting (a dispatch that kept
        the artifacts of thousands of nodes) costs more than asking about each archive: the group
        then switches to HeadObject.
        """
        self.listings += 1
        try:
            keys, pages = await list_keys(self._s3, S3Location(self.bucket, self.prefix))
        except (AWSError, BotoCoreError) as e:
            code = e.code if isinstance(e, AWSError) else type(e).__name__
            if code in _DENIED:
                # A policy that grants GetObject but not ListBucket on the prefix: ask about each
                # archive instead (one HeadObject per due job), and remember it for later groups.
                log.warning("may not list s3://%s/%s (%s): watching each job's results archive on its own", self.bucket, self.prefix, code)
                self._head_only = True
                _denied.add((self._s3, self.bucket, self.prefix))
                return None
            # The jobs' status calls still see their end; this only makes it slower to notice.
            (log.debug if self._warned else log.warning)(
                "could not list s3://%s/%s to watch for results (%s); job ends are seen through status calls",
                self.bucket, self.prefix, code,
            )
            self._warned = True
            return None
        if pages > max(1, watching):
            log.info("s3://%s/%s takes %d pages to list: watching each job's results archive on its own", self.bucket, self.prefix, pages)
            self._head_only = True
        return keys

    async def _head(self, due: list[ArchiveWatcher]) -> set[str]:
        """The keys among the due watchers' archives that exist (one HeadObject each)."""
        found = await asyncio.gather(*(exists(self._s3, S3Location(self.bucket, w.key)) for w in due))
        return {w.key for w, there in zip(due, found) if there}


async def _wait_for_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds pass, whichever is first.

    Unlike ``asyncio.wait_for`` on Python 3.11, a cancellation that arrives in the same step as
    the event is never swallowed.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


_denied: set[tuple[Any, str, str]] = set()
"""Prefixes whose listing was refused (per client): later groups go straight to HeadObject."""
_groups: dict[tuple[Any, str, str], PrefixWatch] = {}


def watch(s3: Any, archive: S3Location, group_prefix: str, poll_freq: float) -> ArchiveWatcher:
    """Start watching for ``archive``, sharing listings with every other job under ``group_prefix``.

    Args:
        s3: the shared S3 client (listings are shared per client, so per event loop and target).
        archive: where the job's results archive will appear.
        group_prefix: a prefix of ``archive.key`` shared with other jobs (the dispatch's); when
            it is not one, the archive's own folder is watched instead.
        poll_freq: the executor's ``poll_freq``: no watcher waits longer than this between checks.
    """
    if group_prefix and archive.key.startswith(group_prefix):
        prefix = group_prefix
    else:
        prefix = archive.key.rsplit("/", 1)[0] + "/" if "/" in archive.key else ""
    group = _groups.get((s3, archive.bucket, prefix))
    if group is None:
        group = _groups[(s3, archive.bucket, prefix)] = PrefixWatch(s3, archive.bucket, prefix)
    return group.add(archive.key, poll_freq)
