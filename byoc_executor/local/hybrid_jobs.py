"""Amazon Braket hybrid jobs: CreateJob, GetJob, CancelJob, SearchJobs (model ``braket/2019-09-01``).

Statuses (``JobPrimaryStatus``): QUEUED -> RUNNING -> COMPLETED | FAILED, and CancelJob ->
CANCELLING -> CANCELLED. ``events[]`` use the model's ``JobEventType`` vocabulary.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from byoc_executor.container import byoc_entry
from byoc_executor.local import validation
from byoc_executor.local.jobs import ACCOUNT_ID, ApiError, Ending, JobContext, JobRun, Phase, now
from byoc_executor.local.registry import JobRegistry, paginate
from byoc_executor.local.validation import split_s3_uri

SERVICE = "braket"
DEFAULT_MAX_RUNTIME = 432_000  # the model's maximum, and Braket's default (5 days)
# The API's default for checkpointConfig.localPath (braket/2019-09-01 JobCheckpointConfig); the
# Braket SDK sends /opt/jobs/checkpoints itself.
DEFAULT_CHECKPOINT_PATH = "/opt/braket/checkpoints"
DEFAULT_SEARCH_RESULTS = 100
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def iso(timestamp: float | None) -> str | None:
    """Braket's timestamps: ISO 8601 in UTC with milliseconds."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def job_arn(region: str, name: str) -> str:
    """``arn:aws:braket:<region>:123456789012:job/<jobName>``."""
    return f"arn:aws:braket:{region}:{ACCOUNT_ID}:job/{name}"


class HybridJob(JobRun):
    """A Braket hybrid job running ``byoc_entry`` under the Braket container contract."""

    service = SERVICE
    log_group = "/aws/braket/jobs"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.status = "QUEUED"
        self.events: list[dict] = []
        self.job_token = secrets.token_hex(16)
        if ":device/qpu/" in self.device:
            self._event("WAITING_FOR_PRIORITY", "Waiting for the device's priority access")
        self._event("QUEUED_FOR_EXECUTION", "The job is queued for execution")

    @property
    def device(self) -> str:
        """The job's primary device."""
        return self.request["deviceConfig"]["device"]

    def _event(self, event_type: str, message: str) -> None:
        self.events.append({"eventType": event_type, "timeOfEvent": iso(now()), "message": message})

    # --- the contract ------------------------------------------------------------------------------

    def channels(self) -> dict[str, str]:
        return {
            c["channelName"]: c["dataSource"]["s3DataSource"]["s3Uri"] for c in self.request.get("inputDataConfig", [])
        }

    def hyperparameters(self) -> dict[str, str]:
        return dict(self.request.get("hyperParameters", {}))

    def results_dir(self, tree: Path | None = None) -> Path:
        # Braket, like SageMaker, tars /opt/ml/model; the container reaches it as /opt/braket/model.
        return (tree or self.tree) / "opt" / "ml" / "model"

    def checkpoint_uri(self) -> str | None:
        return (self.request.get("checkpointConfig") or {}).get("s3Uri") or None

    def _local_checkpoint_path(self) -> str:
        return (self.request.get("checkpointConfig") or {}).get("localPath") or DEFAULT_CHECKPOINT_PATH

    def checkpoint_dir(self, tree: Path) -> Path:
        # What the service writes before the container starts lives under /opt/ml: /opt/braket
        # must not exist yet (the container links it to /opt/ml), so /opt/braket/x is /opt/ml/x.
        local = Path(self._local_checkpoint_path())
        if local.is_relative_to("/opt/braket"):
            return tree / "opt" / "ml" / local.relative_to("/opt/braket")
        return tree / str(local).lstrip("/")

    def instance_count(self) -> int:
        return int(self.request["instanceConfig"].get("instanceCount") or 1)

    def artifact_uri(self) -> str:
        return self.request["outputDataConfig"]["s3Path"].rstrip("/") + "/output/model.tar.gz"

    def max_runtime(self) -> int:
        return int(self.request.get("stoppingCondition", {}).get("maxRuntimeInSeconds", DEFAULT_MAX_RUNTIME))

    def instance_type(self) -> str:
        return self.request["instanceConfig"]["instanceType"]

    def uploads_on(self, ending: Ending) -> bool:
        return ending is not Ending.STOPPED

    def contract_env(self, tree: Path) -> dict[str, str]:
        script = self.request.get("algorithmSpecification", {}).get("scriptModeConfig", {})
        out_bucket, out_prefix = split_s3_uri(self.request["outputDataConfig"]["s3Path"])
        braket_root = tree / "opt" / "braket"  # not there until the container links it to opt/ml
        env = {
            byoc_entry.ENV_BRAKET_JOB_NAME: self.name,
            byoc_entry.ENV_BRAKET_DEVICE_ARN: self.device,
            byoc_entry.ENV_BRAKET_JOB_RESULTS_DIR: str(braket_root / "model"),
            byoc_entry.ENV_BRAKET_CHECKPOINT_DIR: str(tree / self._local_checkpoint_path().lstrip("/")),
            byoc_entry.ENV_BRAKET_HP_FILE: str(braket_root / "input" / "config" / "hyperparameters.json"),
            byoc_entry.ENV_BRAKET_INPUT_DIR: str(braket_root / "input" / "data"),
            byoc_entry.ENV_BRAKET_OUT_S3_BUCKET: out_bucket,
            byoc_entry.ENV_BRAKET_TASK_RESULTS_S3_URI: f"s3://{out_bucket}/jobs/{self.name}/tasks",
            byoc_entry.ENV_BRAKET_JOB_RESULTS_S3_PATH: f"{out_prefix}/output".lstrip("/"),
            byoc_entry.ENV_BRAKET_JOB_TOKEN: self.job_token,
        }
        if script:
            env[byoc_entry.ENV_BRAKET_SCRIPT_S3_URI] = script["s3Uri"]
            env[byoc_entry.ENV_BRAKET_SCRIPT_ENTRY_POINT] = script["entryPoint"]
            env[byoc_entry.ENV_BRAKET_SCRIPT_COMPRESSION_TYPE] = script.get("compressionType", "GZIP")
        return env

    # --- the vocabulary ----------------------------------------------------------------------------

    def on_phase(self, phase: Phase) -> None:
        if self.status == "CANCELLING":
            return
        if phase is Phase.STARTING:
            self._event("STARTING_INSTANCE", "Starting the job's instance")
        elif phase is Phase.DOWNLOADING:
            self.status = "RUNNING"
            self._event("DOWNLOADING_DATA", "Downloading the job's input data")
        elif phase is Phase.RUNNING:
            self._event("RUNNING", "Running the job's entry point")
        elif phase is Phase.UPLOADING:
            self._event("UPLOADING_RESULTS", "Uploading the job's results")

    def on_stop_requested(self) -> None:
        self.status = "CANCELLING"

    def on_end(self, ending: Ending, reason: str | None) -> None:
        if ending is Ending.COMPLETED:
            self.status = "COMPLETED"
            self._event("COMPLETED", "The job completed")
        elif ending is Ending.STOPPED:
            self.status = "CANCELLED"
            self._event("CANCELLED", "The job was cancelled")
        else:
            if ending is Ending.MAX_RUNTIME:
                reason = (
                    f"The job exceeded its maximum runtime of {self.max_runtime()} seconds "
                    "(stoppingCondition.maxRuntimeInSeconds) and was stopped."
                )
                self.failure_reason = reason
                self._event("MAX_RUNTIME_EXCEEDED", reason)
            self.status = "FAILED"
            self._event("FAILED", (reason or "")[:2500])

    # --- the API's shapes --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The GetJob response."""
        with self.lock:
            r = self.request
            instance = {"instanceCount": 1, **r["instanceConfig"]}
            response = {
                "status": self.status,
                "jobArn": self.arn,
                "jobName": self.name,
                "roleArn": r["roleArn"],
                "algorithmSpecification": r["algorithmSpecification"],
                "outputDataConfig": r["outputDataConfig"],
                "instanceConfig": instance,
                "deviceConfig": r["deviceConfig"],
                "stoppingCondition": {"maxRuntimeInSeconds": self.max_runtime()},
                "createdAt": iso(self.created_at),
                "events": list(self.events),
            }
            for key in ("hyperParameters", "inputDataConfig", "checkpointConfig", "tags", "associations"):
                if key in r:
                    response[key] = r[key]
            if self.failure_reason:
                response["failureReason"] = self.failure_reason
            if self.started_at is not None:
                response["startedAt"] = iso(self.started_at)
            if self.ended_at is not None and self.status in TERMINAL:
                response["endedAt"] = iso(self.ended_at)
                if self.started_at is not None:  # milliseconds, like the console's "billable duration"
                    response["billableDuration"] = int((self.ended_at - self.started_at) * 1000)
            return response

    def summary(self) -> dict[str, Any]:
        """The JobSummary of SearchJobs."""
        full = self.describe()
        summary = {"device": self.device}
        for key in ("status", "jobArn", "jobName", "createdAt", "startedAt", "endedAt", "tags"):
            if key in full:
                summary[key] = full[key]
        return summary

    def admin_view(self) -> dict[str, Any]:
        with self.lock:
            return {"name": self.name, "service": SERVICE, "status": self.status, "pid": self.pid, "arn": self.arn}


class BraketApi:
    """The four hybrid-job operations over the shared job registry."""

    def __init__(self, registry: JobRegistry, context: JobContext):
        self._registry = registry
        self._context = context
        self._tokens: dict[str, str] = {}  # clientToken -> jobName
        self._lock = threading.Lock()

    def create_job(self, region: str, body: dict) -> tuple[int, dict]:
        """CreateJob: validate, honour ``clientToken``, start the job. Returns (201, response).

        Raises:
            ValidationError: the request breaks the model or a semantic rule.
            ApiError: ConflictException for a job name already used with another token.
        """
        validation.validate_input(SERVICE, "CreateJob", body)
        validation.raise_if(_semantic_problems(body))
        name, token = body["jobName"], body["clientToken"]
        with self._lock:
            if token in self._tokens:
                existing = self._registry.get(SERVICE, self._tokens[token])
                return 201, {"jobArn": existing.arn}  # type: ignore[union-attr]
            if self._registry.get(SERVICE, name) is not None:
                raise ApiError("ConflictException", f"A job with the name {name} already exists.", 409)
            job = HybridJob(
                name=name, arn=job_arn(region, name), region=region, request=body,
                tree=self._registry.tree_for(SERVICE, name), context=self._context,
            )
            self._registry.add_new(job)
            self._tokens[token] = name
        job.start()
        return 201, {"jobArn": job.arn}

    def _find(self, job_arn_value: str) -> HybridJob:
        validation.validate_input(SERVICE, "GetJob", {"jobArn": job_arn_value})
        name = job_arn_value.split(":job/", 1)[1]
        job = self._registry.get(SERVICE, name)
        if job is None or job.arn != job_arn_value:
            raise ApiError("ResourceNotFoundException", f"Job {job_arn_value} not found.", 404)
        return job  # type: ignore[return-value]

    def get_job(self, job_arn_value: str) -> dict:
        """GetJob.

        Raises:
            ValidationError: the ARN is malformed.
            ApiError: ResourceNotFoundException.
        """
        return self._find(job_arn_value).describe()

    def cancel_job(self, job_arn_value: str) -> dict:
        """CancelJob: a running job goes CANCELLING, then CANCELLED once its process is gone.

        Raises:
            ValidationError: the ARN is malformed.
            ApiError: ResourceNotFoundException; ConflictException for a job that already ended.
        """
        job = self._find(job_arn_value)
        with job.lock:
            if job.status in ("COMPLETED", "FAILED"):
                raise ApiError(
                    "ConflictException", f"Job {job.arn} is in terminal state {job.status} and cannot be cancelled.", 409
                )
            if job.status == "CANCELLED":
                return {"jobArn": job.arn, "cancellationStatus": "CANCELLED"}
        job.request_stop()
        return {"jobArn": job.arn, "cancellationStatus": "CANCELLING"}

    def search_jobs(self, body: dict) -> dict:
        """SearchJobs with ``jobArn`` (EQUAL, CONTAINS) and ``createdAt`` (LT ... BETWEEN) filters.

        Raises:
            ValidationError: the request breaks the model, or a filter is not supported.
        """
        validation.validate_input(SERVICE, "SearchJobs", body)
        tests = [_predicate(f) for f in body["filters"]]
        jobs = [j for j in self._registry.all(SERVICE) if all(test(j) for test in tests)]
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        page, token = paginate(jobs, body.get("nextToken"), body.get("maxResults", DEFAULT_SEARCH_RESULTS))
        response: dict[str, Any] = {"jobs": [j.summary() for j in page]}  # type: ignore[attr-defined]
        if token:
            response["nextToken"] = token
        return response


def _semantic_problems(body: dict) -> list[str]:
    spec = body["algorithmSpecification"]
    problems = validation.check_image_uri(spec.get("containerImage", {}).get("uri"), "algorithmSpecification.containerImage.uri")
    problems += validation.check_braket_device(body["deviceConfig"]["device"], "deviceConfig.device")
    problems += validation.check_role_arn(body["roleArn"], "roleArn")
    problems += validation.check_s3_uri(body["outputDataConfig"]["s3Path"], "outputDataConfig.s3Path")
    if "scriptModeConfig" in spec:
        problems += validation.check_s3_uri(spec["scriptModeConfig"]["s3Uri"], "algorithmSpecification.scriptModeConfig.s3Uri")
    if "checkpointConfig" in body:
        problems += validation.check_s3_uri(body["checkpointConfig"]["s3Uri"], "checkpointConfig.s3Uri")
    seen: set[str] = set()
    for index, channel in enumerate(body.get("inputDataConfig", []), start=1):
        where = f"inputDataConfig.{index}.member"
        problems += validation.check_s3_uri(channel["dataSource"]["s3DataSource"]["s3Uri"], f"{where}.dataSource.s3DataSource.s3Uri")
        if channel["channelName"] in seen:
            problems.append(f"Value '{channel['channelName']}' at '{where}.channelName' failed to satisfy constraint: Channel names must be unique")
        seen.add(channel["channelName"])
    return problems


def _parse_time(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as e:
        raise validation.ValidationError(
            [f"Value '{value}' at 'filters.member.values' failed to satisfy constraint: Member must be an ISO 8601 timestamp"]
        ) from e


_TIME_TESTS = {
    "LT": lambda t, v: t < v[0],
    "LTE": lambda t, v: t <= v[0],
    "GT": lambda t, v: t > v[0],
    "GTE": lambda t, v: t >= v[0],
    "EQUAL": lambda t, v: t in v,
}


def _predicate(search_filter: dict) -> Callable[[JobRun], bool]:
    """The test one SearchJobs filter applies to a job.

    Raises:
        ValidationError: the filter's name, operator or values are not supported.
    """
    name, operator, values = search_filter["name"], search_filter["operator"], search_filter["values"]
    if name == "jobArn" and operator == "EQUAL":
        return lambda job: job.arn in values
    if name == "jobArn" and operator == "CONTAINS":
        return lambda job: any(v in job.arn for v in values)
    if name == "createdAt":
        times = [_parse_time(v) for v in values]
        if operator == "BETWEEN" and len(times) == 2:
            return lambda job: times[0] <= round(job.created_at, 3) <= times[1]
        if operator in _TIME_TESTS:
            test = _TIME_TESTS[operator]
            return lambda job: test(round(job.created_at, 3), times)
    raise validation.ValidationError(
        [
            f"Value '{name} {operator}' at 'filters.member' failed to satisfy constraint: supported filters are "
            "jobArn with EQUAL or CONTAINS, and createdAt with LT, LTE, EQUAL, GT, GTE or BETWEEN (two values)"
        ]
    )
