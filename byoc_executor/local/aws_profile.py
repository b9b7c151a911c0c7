"""AWS as it is timed and limited: the emulator's ``aws`` profile (``byoc-executor local --profile aws``).

On loopback a job starts in a tenth of a second, every log line is readable at once and no request
is ever refused. On AWS a job spends minutes starting, CloudWatch delivers lines seconds late, a
job just created may not be found for a moment, each job API allows a few requests per second
per account, and an account runs only so many instances of a type at once. This profile gives the
emulator those properties, so that what a workflow costs (jobs, wall time, billed instance time,
requests) can be measured before anyone pays for it.

Each figure says where it comes from. AWS publishes the Braket request quotas and the CloudWatch
Logs ones; it does not publish job start times, log ingestion latency, SageMaker's per-operation
request quotas or how long a new job may be invisible. Those are choices, marked ``unpublished``,
made on the side that costs more (slower starts, lower limits), so a workflow that looks affordable
here is not cheaper than it will be on AWS.

The time scale: with ``time_scale = 60`` every AWS duration is run 60 times faster (a 3-minute
start takes 3 s) and every request quota is 60 times higher per wall second, so that a client
whose own clock runs 60 times faster too (``BYOC_TIME_SCALE=60`` for the executor, see
``byoc_executor/clock.py``) sees AWS's proportions. :class:`Usage` reports in AWS seconds.

Sources (read 2026-12):
  [braket-quotas]  Amazon Braket developer guide, "Amazon Braket Quotas"
                   (docs.aws.amazon.com/braket/latest/developerguide/braket-quotas.html) and the
                   General Reference's "Amazon Braket endpoints and quotas" (burst rates by name).
  [logs-quotas]    CloudWatch Logs API reference, DescribeLogStreams ("a limit of five
                   transactions per second") and "CloudWatch Logs quotas" (GetLogEvents: 10 per
                   second per account per Region; some Regions have since been raised: 10 is the
                   lower figure).
  [sm-billing]     SageMaker API reference, DescribeTrainingJob ``TrainingStartTime``: "You are
                   billed for the time interval between this time and the value of
                   TrainingEndTime" (downloading, training and uploading; not Starting).
  [sm-warm-pools]  SageMaker developer guide, "SageMaker Managed Warm Pools": reuse skips
                   provisioning; the kept-alive time is billed (``ResourceRetainedBillableTimeInSeconds``).
  [botocore]       botocore's service models: Braket ``ThrottlingException`` is HTTP 429 and
                   ``ServiceQuotaExceededException`` 402; SageMaker's errors are HTTP 400
                   (``ThrottlingException``, ``ResourceLimitExceeded``).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from werkzeug.wrappers import Response

from byoc_executor.local.faults import error_response

PROFILES = ("none", "aws")


@dataclass(frozen=True)
class PhaseTimes:
    """How long, in AWS seconds, a job of one service spends in each phase before it runs.

    Attributes:
        queued: waiting for capacity (Braket: QUEUED; SageMaker has no queue of its own).
        starting: provisioning the instance (SageMaker: ``Starting``).
        downloading: fixed part of pulling the image and copying the input (``Downloading``).
        downloading_per_gb: the part that grows with the image's size.
        uploading: tarring and uploading the results (``Uploading``).
        warm_starting: ``starting`` when a warm pool's instance is reused.
    """

    queued: float
    starting: float
    downloading: float
    downloading_per_gb: float
    uploading: float
    warm_starting: float = 0.0


@dataclass(frozen=True)
class RateLimit:
    """A request quota as a token bucket: ``rate`` per second sustained, at most ``burst`` at once."""

    rate: float
    burst: float
    source: str


# --- the figures ---------------------------------------------------------------------------------

# Unpublished: AWS gives no start times. Reports and the services' own consoles show minutes; these
# lean long. Braket: QUEUED while the instance is provisioned (a QPU's own queue for its tasks is
# not modelled), then the container starts. SageMaker: Starting, then Downloading (the image pull
# grows with the image), Training, Uploading.
AWS_PHASES: Mapping[str, PhaseTimes] = {
    "braket": PhaseTimes(queued=60.0, starting=60.0, downloading=20.0, downloading_per_gb=10.0, uploading=10.0),
    "sagemaker": PhaseTimes(queued=0.0, starting=120.0, downloading=20.0, downloading_per_gb=10.0, uploading=10.0,
                            warm_starting=0.0),
}

AWS_LOG_LAG = 5.0
"""Unpublished: seconds between a line's writing and its being readable (CloudWatch Logs is
"near real time"; the Braket SDK keeps reading after a job ends for this reason)."""

AWS_NOT_FOUND_WINDOW = 2.0
"""Unpublished: seconds after a create during which Get/Describe may answer not found (the job
APIs are eventually consistent)."""

AWS_INSTANCE_QUOTA = 20
"""Unpublished per account: Service Quotas sets, per instance type, how many instances jobs of a
service may run at once ("ml.m5.large for training job usage"; Braket's per-type hybrid job
quotas); defaults differ by account and type (often 0 for GPU types in new accounts). 20 here."""

AWS_RATE_LIMITS: Mapping[tuple[str, str], RateLimit] = {
    # Braket, [braket-quotas]: every operation counts against the account's 140/s (burst 600) too.
    ("braket", "*"): RateLimit(140, 600, "[braket-quotas] Rate of API requests"),
    ("braket", "CreateJob"): RateLimit(1, 5, "[braket-quotas]"),
    ("braket", "GetJob"): RateLimit(5, 25, "[braket-quotas]"),
    ("braket", "CancelJob"): RateLimit(2, 5, "[braket-quotas] (burst by name; rate read from the table's order)"),
    ("braket", "SearchJobs"): RateLimit(5, 50, "[braket-quotas] (read from the table's order)"),
    ("braket", "CreateQuantumTask"): RateLimit(20, 40, "[braket-quotas]"),
    ("braket", "GetQuantumTask"): RateLimit(100, 500, "[braket-quotas]"),
    ("braket", "CancelQuantumTask"): RateLimit(2, 20, "[braket-quotas]"),
    ("braket", "SearchQuantumTasks"): RateLimit(5, 50, "[braket-quotas]"),
    ("braket", "GetDevice"): RateLimit(5, 50, "[braket-quotas]"),
    ("braket", "SearchDevices"): RateLimit(5, 50, "[braket-quotas]"),
    # SageMaker: unpublished in the documentation (Service Quotas shows them per account). Users
    # report CreateTrainingJob "Rate exceeded" with a handful of parallel creators and
    # ListTrainingJobs at 2/s, not adjustable. Low choices.
    ("sagemaker", "CreateTrainingJob"): RateLimit(1, 5, "unpublished"),
    ("sagemaker", "DescribeTrainingJob"): RateLimit(5, 10, "unpublished"),
    ("sagemaker", "StopTrainingJob"): RateLimit(1, 5, "unpublished"),
    ("sagemaker", "ListTrainingJobs"): RateLimit(2, 2, "unpublished (Service Quotas as users report it)"),
    ("sagemaker", "ListTags"): RateLimit(5, 10, "unpublished"),
    # CloudWatch Logs, [logs-quotas]. (PutLogEvents comes from the jobs, not from clients.)
    ("logs", "GetLogEvents"): RateLimit(10, 10, "[logs-quotas]"),
    ("logs", "DescribeLogStreams"): RateLimit(5, 5, "[logs-quotas]"),
    ("logs", "FilterLogEvents"): RateLimit(5, 5, "[logs-quotas]"),
    # S3 allows 3,500 writes and 5,500 reads per second per partitioned prefix ("Best practices
    # design patterns: optimizing Amazon S3 performance"): far above what executors send; counted only.
}

# The answer each API gives a throttled request: (HTTP status, code, message) [botocore].
THROTTLED: Mapping[str, tuple[int, str, str]] = {
    "braket": (429, "ThrottlingException", "Rate exceeded"),
    "sagemaker": (400, "ThrottlingException", "Rate exceeded"),
    "logs": (400, "ThrottlingException", "Rate exceeded"),
}


@dataclass(frozen=True)
class AwsProfile:
    """How AWS times and limits the job APIs, and how fast the emulator plays it.

    Attributes:
        name: ``aws`` (or ``none``: the emulator's own fast timing, no limits).
        time_scale: AWS seconds per wall second (1: real time).
        image_gb: the job image's size, which the Downloading phase grows with.
        phases: per service.
        log_lag: AWS seconds before a written line can be read.
        not_found_window: AWS seconds after a create during which Get/Describe answer not found.
        instance_quota: instances of one type that one service's jobs may run at once.
        rate_limits: (service, operation or ``*``) -> quota.
    """

    name: str = "aws"
    time_scale: float = 1.0
    image_gb: float = 0.85
    phases: Mapping[str, PhaseTimes] = field(default_factory=lambda: dict(AWS_PHASES))
    log_lag: float = AWS_LOG_LAG
    not_found_window: float = AWS_NOT_FOUND_WINDOW
    instance_quota: int | None = AWS_INSTANCE_QUOTA
    rate_limits: Mapping[tuple[str, str], RateLimit] = field(default_factory=lambda: dict(AWS_RATE_LIMITS))

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be above 0, not {self.time_scale}")
        if self.image_gb < 0:
            raise ValueError(f"image_gb must be 0 or more, not {self.image_gb}")

    def wall(self, aws_seconds: float) -> float:
        """Wall seconds for ``aws_seconds``."""
        return aws_seconds / self.time_scale

    def phase_seconds(self, service: str) -> dict[str, float]:
        """Wall seconds of each phase of ``service``'s jobs (queued, starting, warm_starting,
        downloading, uploading), the image size applied."""
        times = self.phases[service]
        return {
            "queued": self.wall(times.queued),
            "starting": self.wall(times.starting),
            "warm_starting": self.wall(times.warm_starting),
            "downloading": self.wall(times.downloading + times.downloading_per_gb * self.image_gb),
            "uploading": self.wall(times.uploading),
        }


def profile(name: str, time_scale: float = 1.0, **overrides: Any) -> AwsProfile | None:
    """The profile called ``name`` (``none``: None), played at ``time_scale``.

    Raises:
        ValueError: an unknown name or a bad figure.
    """
    if name == "none":
        return None
    if name != "aws":
        raise ValueError(f"no profile named {name!r}: use one of {', '.join(PROFILES)}")
    return AwsProfile(time_scale=time_scale, **overrides)


# --- the clock, the buckets, the record ------------------------------------------------------------


class AwsClock:
    """AWS seconds since the emulator started: the monotonic wall clock times the time scale."""

    def __init__(self, time_scale: float = 1.0):
        self.time_scale = time_scale
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.time_scale


class TokenBucket:
    """``rate`` tokens per AWS second, at most ``burst`` held; a request takes one or is refused."""

    def __init__(self, limit: RateLimit, at: float):
        self.limit = limit
        self._tokens = float(limit.burst)
        self._at = at

    def take(self, at: float) -> bool:
        """Take a token at AWS time ``at``; False (and nothing taken) if the bucket is empty."""
        self._tokens = min(float(self.limit.burst), self._tokens + (at - self._at) * self.limit.rate)
        self._at = max(self._at, at)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class OperationUsage:
    """What one operation saw: requests, throttled answers, the busiest AWS second."""

    requests: int = 0
    throttled: int = 0
    peak_per_second: int = 0
    _second: int = -1
    _in_second: int = 0

    def add(self, at: float, throttled: bool) -> None:
        self.requests += 1
        self.throttled += int(throttled)
        second = math.floor(at)
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        self.peak_per_second = max(self.peak_per_second, self._in_second)

    def to_json(self) -> dict[str, int]:
        return {"requests": self.requests, "throttled": self.throttled, "peak_per_second": self.peak_per_second}


class Usage:
    """Every client request by (service, operation), in AWS time; thread-safe."""

    def __init__(self, clock: AwsClock):
        self.clock = clock
        self._lock = threading.Lock()
        self._operations: dict[tuple[str, str], OperationUsage] = collections.defaultdict(OperationUsage)

    def record(self, service: str, operation: str, throttled: bool, at: float | None = None) -> None:
        at = self.clock.now() if at is None else at
        with self._lock:
            self._operations[(service, operation)].add(at, throttled)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                f"{service}.{operation}": usage.to_json()
                for (service, operation), usage in sorted(self._operations.items())
            }

    def clear(self) -> None:
        with self._lock:
            self._operations.clear()


class RateLimiter:
    """A request hook of the emulator (``Emulator.request_hooks``): records every client request in
    ``usage`` and answers a throttling error, in the API's own shape, to one over its quota
    (``limits``: (service, operation or ``*``) -> quota; empty: count only)."""

    def __init__(self, limits: Mapping[tuple[str, str], RateLimit], usage: Usage):
        self.usage = usage
        self._lock = threading.Lock()
        now = usage.clock.now()
        self._buckets = {key: TokenBucket(limit, now) for key, limit in limits.items()}

    def __call__(self, call: Any) -> Response | None:
        at = self.usage.clock.now()
        refused = False
        with self._lock:
            for key in ((call.service, "*"), (call.service, call.operation)):
                bucket = self._buckets.get(key)
                if bucket is not None and not bucket.take(at):
                    refused = True
                    break
        self.usage.record(call.service, call.operation, refused, at)
        if not refused:
            return None
        status, code, message = THROTTLED.get(call.service, (400, "ThrottlingException", "Rate exceeded"))
        return error_response(call.service, status, code, message, call.request)

