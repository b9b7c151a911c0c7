"""A job's output, line by line, shipped to CloudWatch Logs in batches.

Real jobs' containers log through the awslogs driver: one event per line, timestamped when the
line was written, in group ``/aws/braket/jobs`` or ``/aws/sagemaker/TrainingJobs`` and stream
``<job name>/algo-1-<epoch seconds>``. :class:`LogShipper` does the same against the emulator's
moto backend: readers timestamp lines as they arrive, one thread sends them every
``flush_interval`` seconds, and :meth:`LogShipper.close` sends what is left, so that every line
is in CloudWatch before the job reports a terminal state.

With an ingestion ``lag`` (the AWS profile), a line is sent only ``lag`` seconds after it was
written, and :meth:`LogShipper.close` does not wait for the rest: as on AWS, the last lines of a
job may become readable after the job reported its end (which is why the Braket SDK keeps reading
logs after a job ends, and why the executor's final read settles).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import IO, Any, Callable

from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

# PutLogEvents limits: https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD


class LogShipper:
    """Batches lines to one CloudWatch Logs stream from a background thread."""

    def __init__(self, logs_client: Any, group: str, stream: str, flush_interval: float = 0.2, lag: float = 0.0):
        self.group = group
        self.stream = stream
        self._client = logs_client
        self._interval = flush_interval
        self._lag = lag
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"logs-{stream}", daemon=True)
        self._stream_ready = False

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def put(self, message: str, timestamp_ms: int | None = None) -> None:
        """Queue one log line (an empty line is kept as one space: PutLogEvents refuses empty messages)."""
        message = message or " "
        data = message.encode("utf-8", "replace")
        if len(data) > MAX_EVENT_BYTES:
            message = data[:MAX_EVENT_BYTES].decode("utf-8", "ignore")
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        with self._lock:
            self._pending.append({"timestamp": stamp, "message": message})

    def close(self) -> None:
        """Send every queued line and stop the thread; with a lag, the thread sends the rest when
        it is due, and this returns at once."""
        self._closing.set()
        if not self._thread.is_alive():
            self._flush(everything=True)
        elif self._lag <= 0:
            self._thread.join()

    def _loop(self) -> None:
        closing = False
        while True:
            if closing:
                time.sleep(self._interval)  # (only with a lag) the rest is sent as it falls due
            else:
                closing = self._closing.wait(self._interval)
            self._flush()
            with self._lock:
                if closing and not self._pending:
                    return

    def _flush(self, everything: bool = False) -> None:
        due = float("inf") if everything or self._lag <= 0 else time.time() * 1000 - self._lag * 1000
        with self._lock:
            events = [e for e in self._pending if e["timestamp"] <= due]
            self._pending = [e for e in self._pending if e["timestamp"] > due]
        if not events:
            return
        events.sort(key=lambda e: e["timestamp"])  # PutLogEvents wants chronological order
        try:
            self._ensure_stream()
            for batch in _batches(events):
                self._client.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=batch)
        except ClientError as e:
            # Nowhere better to report it: the job itself must not fail because its logs did.
            logger.warning("dropping %d log events of %s: %s", len(events), self.stream, e)

    def _ensure_stream(self) -> None:
        if self._stream_ready:
            return
        for create, kwargs in (
            (self._client.create_log_group, {"logGroupName": self.group}),
            (self._client.create_log_stream, {"logGroupName": self.group, "logStreamName": self.stream}),
        ):
            try:
                create(**kwargs)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                    raise
        self._stream_ready = True


def _batches(events: list[dict]):
    batch: list[dict] = []
    size = 0
    for event in events:
        cost = len(event["message"].encode("utf-8")) + EVENT_OVERHEAD
        if batch and (len(batch) >= MAX_BATCH_EVENTS or size + cost > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += cost
    if batch:
        yield batch


def pump_lines(stream: IO[bytes], sinks: list[Callable[[str], None]]) -> threading.Thread:
    """Start a thread that reads ``stream`` to EOF and hands each decoded line to every sink."""

    def run() -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                for sink in sinks:
                    sink(line)

    thread = threading.Thread(target=run, name="log-pump", daemon=True)
    thread.start()
    return thread


class Tail:
    """The last few lines of a job's output, for failure reasons when there is no failure file."""

    def __init__(self, size: int = 5):
        self._lines: collections.deque[str] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def lines(self) -> list[str]:
        """The kept lines, oldest first."""
        with self._lock:
            return list(self._lines)
