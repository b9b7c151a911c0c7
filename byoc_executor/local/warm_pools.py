"""SageMaker managed warm pools: ``ResourceConfig.KeepAlivePeriodInSeconds`` > 0.

From the SageMaker developer guide ("SageMaker Managed Warm Pools") and the API reference of
``WarmPoolStatus``:

- a job that asked for a keep-alive period keeps its instances after it ends: its warm pool is
  ``Available`` for ``KeepAlivePeriodInSeconds``, then ``Terminated``. The pool is retained when
  the job completed, was stopped after its cluster started, or failed with an algorithm or
  client error; not when the emulator itself failed it (an ``InternalServerError``);
- a new job with matching specifications that also asks for a keep-alive period moves the pool
  to itself: the old job's pool becomes ``Reused`` (``ReusedByJob``: the new job), the new job's
  is ``InUse`` while it runs and ``Available`` after it ends (for its own keep-alive period);
- ``ResourceRetainedBillableTimeInSeconds`` is the wall-clock time the pool was retained.

``scale`` (the AWS profile's time scale) plays the keep-alive period that many times faster.

What "matching" means here: the same role, instance type, instance count, volume size, volume
KMS key, VPC configuration, network isolation and inter-container encryption. The guide lists
the criteria; this list is the emulator's reading of it, not confirmed against the service.
"""

from __future__ import annotations

from typing import Any, Protocol


class PoolOwner(Protocol):
    """What this module needs of a training job."""

    name: str
    request: dict
    started_at: float | None
    ended_at: float | None
    failure_reason: str | None
    warm_pool_reused_by: str | None
    warm_pool_reused_at: float | None
    warm_pool_source: str | None

    @property
    def ended(self) -> bool: ...


def keep_alive(request: dict) -> int:
    """The job's ``KeepAlivePeriodInSeconds`` (0: no warm pool)."""
    return int((request.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds") or 0)


def pool_key(request: dict) -> tuple:
    """What a new job must share with a pool's job to reuse the pool."""
    resources = request.get("ResourceConfig") or {}
    vpc = request.get("VpcConfig") or {}
    return (
        request.get("RoleArn"),
        resources.get("InstanceType"),
        resources.get("InstanceCount"),
        resources.get("VolumeSizeInGB"),
        resources.get("VolumeKmsKeyId"),
        tuple(sorted(vpc.get("Subnets") or ())),
        tuple(sorted(vpc.get("SecurityGroupIds") or ())),
        bool(request.get("EnableNetworkIsolation")),
        bool(request.get("EnableInterContainerTrafficEncryption")),
    )


def retained(job: PoolOwner) -> bool:
    """Whether the ended job left a warm pool behind."""
    if not job.ended or keep_alive(job.request) <= 0 or job.started_at is None or job.ended_at is None:
        return False
    return not (job.failure_reason or "").startswith("InternalServerError")


def status(job: PoolOwner, at: float, scale: float = 1.0) -> dict[str, Any] | None:
    """The job's ``WarmPoolStatus`` at time ``at`` (None: the job has no warm pool to report)."""
    if keep_alive(job.request) <= 0:
        return None
    if not job.ended:
        return {"Status": "InUse"} if job.warm_pool_source else None
    if not retained(job):
        return None
    assert job.ended_at is not None
    expiry = job.ended_at + keep_alive(job.request) / scale
    if job.warm_pool_reused_by is not None and job.warm_pool_reused_at is not None:
        seconds = job.warm_pool_reused_at - job.ended_at
        return {"Status": "Reused", "ResourceRetainedBillableTimeInSeconds": int(seconds), "ReusedByJob": job.warm_pool_reused_by}
    seconds = min(at, expiry) - job.ended_at
    return {"Status": "Available" if at < expiry else "Terminated", "ResourceRetainedBillableTimeInSeconds": int(seconds)}


def find_available(jobs: list, request: dict, at: float, scale: float = 1.0) -> Any | None:
    """The job whose Available warm pool a new job with ``request`` reuses (the oldest such pool), if any."""
    if keep_alive(request) <= 0:
        return None
    key = pool_key(request)
    candidates = [
        j for j in jobs
        if pool_key(j.request) == key and (status(j, at, scale) or {}).get("Status") == "Available"
    ]
    candidates.sort(key=lambda j: j.ended_at)
    return candidates[0] if candidates else None
