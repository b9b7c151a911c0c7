"""The emulator's jobs, by service and name, and the directories they live in."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

from byoc_executor.local.jobs import ApiError, JobRun


class JobRegistry:
    """Every job the emulator has accepted, for both services and every region. Thread-safe.

    Job names are unique per service, account and region (SageMaker: "unique within an AWS
    account and region"; Braket's job ARNs carry the region): a client in us-west-2 does not see
    us-east-1's jobs. ``region=None`` in a lookup means any region (the admin surface).
    """

    def __init__(self, root: Path):
        self.root = root
        self._jobs: dict[tuple[str, str, str], JobRun] = {}
        self._lock = threading.Lock()

    def get(self, service: str, name: str, region: str | None = None) -> JobRun | None:
        """The job called ``name`` of ``service`` in ``region`` (any region if None), if any."""
        with self._lock:
            for (svc, reg, n), job in self._jobs.items():
                if svc == service and n == name and (region is None or reg == region):
                    return job
        return None

    def by_arn(self, arn: str) -> JobRun | None:
        """The job whose ARN is ``arn``, if any."""
        with self._lock:
            return next((job for job in self._jobs.values() if job.arn == arn), None)

    def add_new(self, job: JobRun) -> JobRun | None:
        """Register ``job`` unless its name is taken in its region; returns the existing job if it is."""
        with self._lock:
            key = (job.service, job.region, job.name)
            if key in self._jobs:
                return self._jobs[key]
            self._jobs[key] = job
            return None

    def all(self, service: str | None = None, region: str | None = None) -> list[JobRun]:
        """Jobs in creation order, optionally of one service and one region."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in jobs if (service is None or j.service == service) and (region is None or j.region == region)]

    def by_name(self, name: str) -> list[JobRun]:
        """Jobs of any service called ``name``."""
        return [j for j in self.all() if j.name == name]

    def tree_for(self, service: str, name: str) -> Path:
        """``<root>/<jobName>/``; a name already used by the other service gets a suffix."""
        with self._lock:
            taken = sum(1 for (_, _, n) in self._jobs if n == name)
        return self.root / (f"{name}.{service}{'.' + str(taken) if taken > 1 else ''}" if taken else name)


def paginate(items: list, next_token: str | None, max_results: int) -> tuple[list, str | None]:
    """One page of ``items`` and the token of the next page (an offset; opaque to clients).

    Raises:
        ApiError: the token was not issued by this emulator.
    """
    start = 0
    if next_token:
        try:
            start = int(base64.urlsafe_b64decode(next_token.encode()).decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError("ValidationException", f"Invalid pagination token: {next_token!r}") from e
    end = start + max_results
    token = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
    return items[start:end], token
