"""Following a job's CloudWatch log streams while it runs: paginated, no duplicates, no gaps.

Both services write a job's output to one or more streams named ``<job name>/...`` in their log
group. A ``LogFollower`` remembers, per stream, the ``nextForwardToken`` of the last page it read,
so each call to ``poll()`` returns exactly the events that arrived since the previous one, across
every page. CloudWatch answers the same forward token again when a stream has nothing new; that is
how the end of a stream is recognised. The group does not exist until the job first logs: that is
"nothing yet", not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from byoc_executor import clock

log = logging.getLogger(__name__)

MAX_PAGES_PER_POLL = 50  # a bound on one poll's work; the next poll carries on from the token
FINAL_ATTEMPTS = 6  # reads of the logs after the job ended, while the Logs API throttles
THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException"}
# DescribeLogStreams allows 5 requests per second per account (CloudWatch Logs quotas), shared by
# every job followed: 256 electrons at once listed their streams every 30 s and reached it
# (bench/aws_workflows.py). Streams are listed again every STREAM_REFRESH once one is known (a spot
# restart or another host adds one; the read after the end always lists), at most every
# EMPTY_RELIST while none is (the job's container has not started logging).
STREAM_REFRESH = 120.0
EMPTY_RELIST = 10.0
KEPT_LINES = 2000  # what a failed node's stderr gets at most
# CloudWatch Logs makes events readable seconds after they were written (the Braket SDK's log
# tailer reads once more after a job's end for that reason). settle() reads until the streams have
# been quiet this long; AWS publishes no bound for the lag, so this is a choice.
SETTLE_QUIET = 6.0
SETTLE_PAUSE = 1.5
SETTLE_MAX = 30.0


class LogFollower:
    """Reads new log events of one job on each ``poll()``."""

    def __init__(self, logs: Any, group: str, stream_prefix: str):
        self._logs = logs
        self._group = group
        self._prefix = stream_prefix
        self._tokens: dict[str, str | None] = {}
        self._streams_known: list[str] = []
        self._listed_at = float("-inf")
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)

    async def poll(self, final: bool = False) -> list[str]:
        """The messages logged since the last poll, oldest first (also kept in ``lines``).

        Args:
            final: the job has ended: list its streams again, whenever they were last listed.
        """
        new: list[str] = []
        for attempt in range(FINAL_ATTEMPTS if final else 1):
            try:
                now = clock.now()
                since = now - self._listed_at
                if final or since > (STREAM_REFRESH if self._streams_known else EMPTY_RELIST):
                    self._streams_known, self._listed_at = await self._streams(), now
                for stream in self._streams_known:
                    await self._read(stream, new)
                break
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code == "ResourceNotFoundException":
                    break  # the job never logged
                if final and code in THROTTLED and attempt + 1 < FINAL_ATTEMPTS:
                    # The last read is the one a failure's diagnosis needs: wait out throttling
                    # (the Logs client itself retries little, so polls never stall the job's status).
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                # Logs are a convenience: never fail a task because they could not be read. The
                # tokens only move past what was read, so the next poll reads what this one missed.
                log.warning("could not read %s/%s*: %s", self._group, self._prefix, e)
                break
            except BotoCoreError as e:
                log.warning("could not reach the logs of %s/%s*: %s", self._group, self._prefix, e)
                break
        self.lines.extend(new)
        return new

    async def settle(self) -> list[str]:
        """Keep reading after the job's end until nothing new has come for SETTLE_QUIET seconds
        (at most SETTLE_MAX): the last lines of a job that died are the ones a diagnosis needs,
        and they are the last to reach CloudWatch. Returns what came meanwhile."""
        start = quiet_since = clock.now()
        new: list[str] = []
        while clock.now() - start < SETTLE_MAX:
            await clock.sleep(SETTLE_PAUSE)
            lines = await self.poll(final=True)
            now = clock.now()
            if lines:
                new += lines
                quiet_since = now
            elif now - quiet_since >= SETTLE_QUIET:
                break
        return new

    async def _streams(self) -> list[str]:
        names: list[str] = []
        paginator = self._logs.get_paginator("describe_log_streams")
        async for page in paginator.paginate(logGroupName=self._group, logStreamNamePrefix=self._prefix):
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
        return sorted(names)

    async def _read(self, stream: str, into: list[str]) -> None:
        """Append the stream's new messages to ``into``, a page at a time.

        The stream's token advances only together with the page it covers, so an error half-way
        loses nothing: what was appended stays, and the next read starts after it.
        """
        for _ in range(MAX_PAGES_PER_POLL):
            token = self._tokens.get(stream)
            kwargs = {"nextToken": token} if token else {"startFromHead": True}
            page = await self._logs.get_log_events(logGroupName=self._group, logStreamName=stream, **kwargs)
            into += [e["message"].rstrip("\n") for e in page.get("events", [])]
            following = page.get("nextForwardToken")
            if not following or following == token:
                return
            self._tokens[stream] = following
