"""Braket quantum tasks, as far as a hybrid job needs them: Create, Get, Cancel and SearchQuantumTasks.

A hybrid job's code creates quantum tasks with the job's token (``AMZN_BRAKET_JOB_TOKEN``), which
associates them with the job (the model: "The token for an Amazon Braket hybrid job that
associates it with the quantum task"). The emulator runs no circuit: it validates the request
against the model (``braket/2019-09-01``), records it with its ``jobToken``, answers a
``quantumTaskArn``, and reports the task ``COMPLETED``. A token that belongs to one of the
emulator's jobs sets the task's ``jobArn``; what the real service answers for a token it does
not know is not emulated (the task is recorded without a job). Tasks are kept per region (their
ARN carries it); CancelQuantumTask of a task that is already COMPLETED answers its status
unchanged (AWS's answer for a terminal task is unconfirmed: the model's ``CancellationStatus`` has
only CANCELLING and CANCELLED, so the emulator answers CANCELLED without changing the task, which
is unconfirmed too). SearchQuantumTasks filters by ``quantumTaskArn``, ``deviceArn``, ``jobArn``,
``status`` (EQUAL) and ``createdAt`` (LT, LTE, EQUAL, GT, GTE, BETWEEN), the names the model lists.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable

from datetime import datetime

from byoc_executor.local import devices, validation
from byoc_executor.local.hybrid_jobs import iso
from byoc_executor.local.jobs import ACCOUNT_ID, ApiError, now
from byoc_executor.local.registry import paginate

SERVICE = "braket"


class QuantumTasks:
    """Every quantum task created against the emulator. Thread-safe.

    Args:
        job_for_token: the ARN of the job that owns a job token, or None.
    """

    def __init__(self, job_for_token: Callable[[str], "str | None"]):
        self._job_for_token = job_for_token
        self._tasks: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, str] = {}  # clientToken -> quantumTaskArn
        self._lock = threading.Lock()

    def create(self, region: str, body: dict) -> tuple[int, dict]:
        """CreateQuantumTask: returns (201, ``{"quantumTaskArn": ...}``).

        Raises:
            ValidationError: the request breaks the model or names no device the emulator knows.
        """
        validation.validate_input(SERVICE, "CreateQuantumTask", body)
        validation.raise_if(validation.check_braket_device(body["deviceArn"], "deviceArn"))
        if devices.find(body["deviceArn"], region) is None:
            raise ApiError("ValidationException", f"Device {body['deviceArn']} does not exist in {region}")
        with self._lock:
            if body["clientToken"] in self._tokens:
                return 201, {"quantumTaskArn": self._tokens[body["clientToken"]]}
            arn = f"arn:aws:braket:{region}:{ACCOUNT_ID}:quantum-task/{uuid.uuid4()}"
            created = now()
            task: dict[str, Any] = {
                "quantumTaskArn": arn,
                "status": "COMPLETED",
                "deviceArn": body["deviceArn"],
                "deviceParameters": body.get("deviceParameters", "{}"),
                "shots": body["shots"],
                "outputS3Bucket": body["outputS3Bucket"],
                "outputS3Directory": f"{body['outputS3KeyPrefix'].rstrip('/')}/{arn.rsplit('/', 1)[1]}",
                "createdAt": created,
                "endedAt": created,
                "tags": dict(body.get("tags", {})),
            }
            if body.get("associations"):
                task["associations"] = list(body["associations"])
            job_arn = self._job_for_token(body["jobToken"]) if body.get("jobToken") else None
            if job_arn is not None:
                task["jobArn"] = job_arn
            # Kept for the admin surface only; GetQuantumTask does not return the token.
            self._tasks[arn] = {"task": task, "jobToken": body.get("jobToken"), "action": body["action"]}
            self._tokens[body["clientToken"]] = arn
        return 201, {"quantumTaskArn": arn}

    def _record(self, arn: str, region: str | None) -> dict[str, Any]:
        with self._lock:
            record = self._tasks.get(arn)
        if record is None or (region is not None and arn.split(":")[3] != region):
            raise ApiError("ResourceNotFoundException", f"Quantum task {arn} not found.", 404)
        return record

    def get(self, arn: str, region: str | None = None) -> dict:
        """GetQuantumTask.

        Raises:
            ApiError: ResourceNotFoundException (also for another region's task).
        """
        task = dict(self._record(arn, region)["task"])
        for key in ("createdAt", "endedAt"):
            task[key] = iso(task[key])
        return task

    def cancel(self, arn: str, region: str, body: dict) -> dict:
        """CancelQuantumTask (see the module docstring for a task that already ended).

        Raises:
            ApiError: ResourceNotFoundException.
        """
        validation.validate_input(SERVICE, "CancelQuantumTask", {"quantumTaskArn": arn, **body})
        record = self._record(arn, region)
        with self._lock:
            task = record["task"]
            if task["status"] in ("CREATED", "QUEUED", "RUNNING", "CANCELLING"):
                task["status"] = "CANCELLED"
        return {"quantumTaskArn": arn, "cancellationStatus": "CANCELLED"}

    def tags_of(self, arn: str, region: str) -> dict[str, str] | None:
        """A task's tags for ListTagsForResource (None: no such task here)."""
        try:
            return dict(self._record(arn, region)["task"].get("tags") or {})
        except ApiError:
            return None

    def search(self, region: str, body: dict) -> dict:
        """SearchQuantumTasks.

        Raises:
            ValidationError: the request breaks the model, or a filter is not supported.
        """
        validation.validate_input(SERVICE, "SearchQuantumTasks", body)
        with self._lock:
            tasks = [dict(r["task"]) for arn, r in self._tasks.items() if arn.split(":")[3] == region]
        for search_filter in body["filters"]:
            tasks = [t for t in tasks if _matches(t, search_filter)]
        tasks.sort(key=lambda t: t["createdAt"], reverse=True)
        page, token = paginate(tasks, body.get("nextToken"), body.get("maxResults", 100))
        keys = ("quantumTaskArn", "status", "deviceArn", "shots", "outputS3Bucket", "outputS3Directory", "createdAt", "endedAt", "tags")
        summaries = [{k: (iso(t[k]) if k in ("createdAt", "endedAt") else t[k]) for k in keys if k in t} for t in page]
        response: dict[str, Any] = {"quantumTasks": summaries}
        if token:
            response["nextToken"] = token
        return response

    def recorded(self) -> list[dict[str, Any]]:
        """Every task as recorded: ``quantumTaskArn``, ``jobToken``, ``jobArn``, ``deviceArn``, ``shots``, ``action``."""
        with self._lock:
            records = list(self._tasks.values())
        return [
            {
                "quantumTaskArn": r["task"]["quantumTaskArn"],
                "jobToken": r["jobToken"],
                "jobArn": r["task"].get("jobArn"),
                "deviceArn": r["task"]["deviceArn"],
                "shots": r["task"]["shots"],
                "action": r["action"],
            }
            for r in records
        ]



def _time(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as e:
        raise validation.ValidationError([f"Value '{value}' at 'filters.member.values' failed to satisfy constraint: Member must be an ISO 8601 timestamp"]) from e


def _matches(task: dict, search_filter: dict) -> bool:
    name, operator, values = search_filter["name"], search_filter["operator"], search_filter["values"]
    if name in ("quantumTaskArn", "deviceArn", "jobArn", "status"):
        if operator != "EQUAL":
            raise validation.ValidationError([f"Value '{operator}' at 'filters.member.operator' failed to satisfy constraint: {name} supports EQUAL only"])
        return task.get(name) in values
    if name == "createdAt":
        created, times = round(task["createdAt"], 3), [_time(v) for v in values]
        tests = {"LT": lambda: created < times[0], "LTE": lambda: created <= times[0], "GT": lambda: created > times[0],
                 "GTE": lambda: created >= times[0], "EQUAL": lambda: created in times,
                 "BETWEEN": lambda: len(times) == 2 and times[0] <= created <= times[1]}
        return tests[operator]()
    raise validation.ValidationError(
        [f"Value '{name}' at 'filters.member.name' failed to satisfy constraint: one of quantumTaskArn, deviceArn, jobArn, status, createdAt"]
    )
