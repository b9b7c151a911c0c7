"""Following a job's CloudWatch log streams while it runs: paginated, no duplicates, no gaps.

Both services write a job's output to one or more streams named ``<job name>/...`` in their log
group. A ``LogFollower`` remembers, per stream, the ``nextForwardToken`` of the last page it read,
so each call to ``poll()`` returns exactly the events that arrived since the previous one, across
every page. CloudWatch answers the same forward token again when a stream has nothing new; that is
how the end of a stream is recognised. The group does not exist until the job first logs: that is
"nothing yet", not an error.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

MAX_PAGES_PER_POLL = 50  # a bound on one poll's work; the next poll carries on from the token
KEPT_LINES = 2000  # what a failed node's stderr gets at most


class LogFollower:
    """Reads new log events of one job on each ``poll()``."""

    def __init__(self, logs: Any, group: str, stream_prefix: str):
        self._logs = logs
        self._group = group
        self._prefix = stream_prefix
        self._tokens: dict[str, str | None] = {}
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)

    async def poll(self) -> list[str]:
        """The messages logged since the last poll, oldest first (also kept in ``lines``)."""
        new: list[str] = []
        try:
            for stream in await self._streams():
                new += await self._read(stream)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                # Logs are a convenience: never fail a task because they could not be read. The
                # tokens did not move, so the next poll reads what this one missed.
                log.warning("could not read %s/%s*: %s", self._group, self._prefix, e)
        except BotoCoreError as e:
            log.warning("could not reach the logs of %s/%s*: %s", self._group, self._prefix, e)
        self.lines.extend(new)
        return new

    async def _streams(self) -> list[str]:
        names: list[str] = []
        paginator = self._logs.get_paginator("describe_log_streams")
        async for page in paginator.paginate(logGroupName=self._group, logStreamNamePrefix=self._prefix):
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
        return sorted(names)

    async def _read(self, stream: str) -> list[str]:
        out: list[str] = []
        for _ in range(MAX_PAGES_PER_POLL):
            token = self._tokens.get(stream)
            kwargs = {"nextToken": token} if token else {"startFromHead": True}
            page = await self._logs.get_log_events(logGroupName=self._group, logStreamName=stream, **kwargs)
            out += [e["message"].rstrip("\n") for e in page.get("events", [])]
            following = page.get("nextForwardToken")
            if not following or following == token:
                break
            self._tokens[stream] = following
        return out
