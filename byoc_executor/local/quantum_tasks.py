"""Braket quantum tasks, as far as a hybrid job needs them: CreateQuantumTask and GetQuantumTask.

A hybrid job's code creates quantum tasks with the job's token (``AMZN_BRAKET_JOB_TOKEN``), which
associates them with the job (the model: "The token for an Amazon Braket hybrid job that
associates it with the quantum task"). The emulator runs no circuit: it validates the request
against the model (``braket/2019-09-01``), records it with its ``jobToken``, answers a
``quantumTaskArn``, and reports the task ``COMPLETED``. A token that belongs to one of the
emulator's jobs sets the task's ``jobArn``; what the real service answers for a token it does
not know is not emulated (the task is recorded without a job).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable

from byoc_executor.local import validation
from byoc_executor.local.hybrid_jobs import iso
from byoc_executor.local.jobs import ACCOUNT_ID, ApiError, now

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

    def get(self, arn: str) -> dict:
        """GetQuantumTask.

        Raises:
            ApiError: ResourceNotFoundException.
        """
        with self._lock:
            record = self._tasks.get(arn)
        if record is None:
            raise ApiError("ResourceNotFoundException", f"Quantum task {arn} not found.", 404)
        task = dict(record["task"])
        for key in ("createdAt", "endedAt"):
            task[key] = iso(task[key])
        return task

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

