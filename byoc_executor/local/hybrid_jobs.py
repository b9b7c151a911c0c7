"""Amazon Braket hybrid jobs: CreateJob, GetJob, CancelJob, SearchJobs (model ``braket/2019-09-01``).

Statuses (``JobPrimaryStatus``): QUEUED -> RUNNING -> COMPLETED | FAILED, and CancelJob ->
CANCELLING -> CANCELLED. ``events[]`` use the model's ``JobEventType`` vocabulary. The container
contract (environment, layout, ARNs, log streams, queueInfo) is ``braket_contract.py``'s.

What runs (decided at creation, see :func:`refusal`):
- a job on an AWS-provided Braket image (or none) with a ``scriptModeConfig``: script mode,
  as the AWS container runs it (``braket_script_mode.py``), in the emulator's own Python;
- any other job: the emulator's launcher (process mode: the byoc-executor image as a process,
  which refuses jobs that are not byoc-executor's; container mode: the job's image if the
  container tool has it, else ``--image``).
"""

from __future__ import annotations

import secrets
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from byoc_executor.local import braket_contract, devices, s3_uris, validation
from byoc_executor.local.jobs import ACCOUNT_ID, ApiError, Ending, JobContext, JobRun, Launcher, Phase, instance_quota_problem, now
from byoc_executor.local.launchers import ProcessLauncher
from byoc_executor.local.registry import JobRegistry, paginate

SERVICE = "braket"
DEFAULT_MAX_RUNTIME = 432_000  # the model's maximum, and Braket's default (5 days)
DEFAULT_CHECKPOINT_PATH = braket_contract.DEFAULT_CHECKPOINT_PATH
_SCRIPT_MODE_LAUNCHER = ProcessLauncher()
SCRIPT_MODE_COMMAND = [sys.executable, "-m", "byoc_executor.local.braket_script_mode"]
DEFAULT_SEARCH_RESULTS = 100
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def iso(timestamp: float | None) -> str | None:
    """Braket's timestamps: ISO 8601 in UTC with milliseconds."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def job_arn(region: str, name: str | None = None) -> str:
    """``arn:aws:braket:<region>:123456789012:job/<uuid>`` (today's ARNs end in a UUID, not the name)."""
    return braket_contract.job_arn(region, ACCOUNT_ID)


def script_mode(request: dict) -> bool:
    """Whether the job runs as the AWS-provided Braket container runs a script (see the module docstring)."""
    spec = request.get("algorithmSpecification") or {}
    return braket_contract.is_aws_job_image((spec.get("containerImage") or {}).get("uri")) and "scriptModeConfig" in spec


def refusal(request: dict, launcher: Launcher) -> str | None:
    """Why local mode cannot run this job (None: it can), decided before the job is accepted."""
    spec = request.get("algorithmSpecification") or {}
    if braket_contract.is_aws_job_image((spec.get("containerImage") or {}).get("uri")):
        if "scriptModeConfig" not in spec:
            return "a job on an AWS-provided Braket image needs algorithmSpecification.scriptModeConfig (the script to run)"
        return None
    ask = getattr(launcher, "refusal", None)
    return ask(SERVICE, request) if ask is not None else None


class HybridJob(JobRun):
    """A Braket hybrid job under the Braket container contract (``braket_contract.py``)."""

    service = SERVICE
    log_group = braket_contract.LOG_GROUP
    failure_reason_limit = braket_contract.FAILURE_REASON_LIMIT

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
        script = dict(self.request.get("algorithmSpecification", {}).get("scriptModeConfig", {}))
        if script:
            script["s3Uri"] = s3_uris.to_s3_uri(script["s3Uri"])
            # The emulator's choice when absent: GZIP, what every client here uploads (the
            # model documents no default; unconfirmed what the service sets).
            script.setdefault("compressionType", "GZIP")
        # AMZN_BRAKET_CHECKPOINT_DIR only for a job with a checkpointConfig: what the service sets
        # without one is unconfirmed (braket_contract.container_environment), and a directory
        # that nothing syncs to S3 would lose whatever a task saved there.
        checkpoints = str(tree / self._local_checkpoint_path().lstrip("/")) if self.checkpoint_uri() else None
        return braket_contract.container_environment(
            job_name=self.name,
            device=self.device,
            braket_root=str(tree / "opt" / "braket"),  # not there until the container links it to opt/ml
            checkpoint_dir=checkpoints,
            output_s3_path=self.request["outputDataConfig"]["s3Path"],
            job_token=self.job_token,
            script_mode=script or None,
        )

    def image(self) -> str | None:
        return (self.request.get("algorithmSpecification", {}).get("containerImage") or {}).get("uri")

    def job_launcher(self) -> Launcher:
        return _SCRIPT_MODE_LAUNCHER if script_mode(self.request) else self.context.launcher

    def command(self) -> list[str]:
        if script_mode(self.request):
            return list(SCRIPT_MODE_COMMAND)
        return super().command()

    def log_stream_prefix(self) -> str:
        return braket_contract.log_stream_prefix(self.name, self.arn)

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

    def describe(self, attributes: tuple[str, ...] = (), queue_position: int = 1) -> dict[str, Any]:
        """The GetJob response; ``attributes`` are its ``additionalAttributeNames`` (``QueueInfo``).

        Args:
            attributes: ``additionalAttributeNames``.
            queue_position: the job's place in its device's jobs queue while it is QUEUED
                (``BraketApi.queue_position``); not shown once it has left the queue.
        """
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
            if "QueueInfo" in attributes:
                response["queueInfo"] = braket_contract.queue_info(self.status, queue_position)
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
    """The hybrid-job operations over the shared job registry."""

    def __init__(self, registry: JobRegistry, context: JobContext):
        self._registry = registry
        self._context = context
        self._tokens: dict[tuple[str, str], tuple[str, dict]] = {}  # (region, clientToken) -> (jobArn, request)
        self._lock = threading.Lock()

    def create_job(self, region: str, body: dict) -> tuple[int, dict]:
        """CreateJob: validate, honour ``clientToken``, start the job. Returns (201, response).

        A ``clientToken`` seen before with the same request answers the same job (the model's
        ``idempotencyToken``); with a different request it is refused with ConflictException
        (AWS's code and message for that case are unconfirmed; refusing fails safe, where
        answering another job's ARN would not).

        Raises:
            ValidationError: the request breaks the model or a semantic rule.
            ApiError: ConflictException for a job name already used, or a token reused with
                another request; ValidationException for a job local mode cannot run.
        """
        validation.validate_input(SERVICE, "CreateJob", body)
        validation.raise_if(_semantic_problems(body, region))
        name, token = body["jobName"], body["clientToken"]
        with self._lock:
            seen = self._tokens.get((region, token))
            if seen is not None:
                if seen[1] != body:
                    raise ApiError(
                        "ConflictException",
                        f"The clientToken {token} was already used with a different request (job {seen[0]}).",
                        409,
                    )
                return 201, {"jobArn": seen[0]}
            if self._registry.get(SERVICE, name, region) is not None:
                raise ApiError("ConflictException", f"A job with the name {name} already exists.", 409)
            why = refusal(body, self._context.launcher)
            if why is not None:
                raise ApiError("ValidationException", f"Local mode cannot run this job: {why}. {LOCAL_MODE_RUNS}")
            instances = body["instanceConfig"]
            over = instance_quota_problem(
                self._registry.all(SERVICE, region), instances["instanceType"], int(instances.get("instanceCount") or 1),
                self._context.timing.instance_quota,
            )
            if over is not None:
                raise ApiError("ServiceQuotaExceededException", over, 402)
            job = HybridJob(
                name=name, arn=job_arn(region), region=region, request=body,
                tree=self._registry.tree_for(SERVICE, name), context=self._context,
            )
            self._registry.add_new(job)
            self._tokens[(region, token)] = (job.arn, body)
        job.start()
        return 201, {"jobArn": job.arn}

    def _find(self, job_arn_value: str, region: str | None = None) -> HybridJob:
        validation.validate_input(SERVICE, "GetJob", {"jobArn": job_arn_value})
        job = self._registry.by_arn(job_arn_value)
        if job is None or job.service != SERVICE or (region is not None and job.region != region) or job.hidden():
            raise ApiError("ResourceNotFoundException", f"Job {job_arn_value} not found.", 404)
        return job  # type: ignore[return-value]

    def get_job(self, job_arn_value: str, region: str | None = None, attributes: tuple[str, ...] = ()) -> dict:
        """GetJob (``attributes``: ``additionalAttributeNames``, e.g. ``("QueueInfo",)``).

        Raises:
            ValidationError: the ARN is malformed, or an attribute is not in the model's enum.
            ApiError: ResourceNotFoundException (also for another region's job).
        """
        validation.validate_input(SERVICE, "GetJob", {"jobArn": job_arn_value, "additionalAttributeNames": list(attributes)})
        job = self._find(job_arn_value, region)
        position = self.queue_position(job) if "QueueInfo" in attributes else 1
        ended = job.ended  # before the answer is made: it shows at least this
        answer = job.describe(tuple(attributes), position)
        job.described(ended)
        return answer

    def queue_position(self, job: HybridJob) -> int:
        """``job``'s place in the jobs queue: its rank among the QUEUED jobs of the same device in
        the same region, oldest first (1: the next to leave).

        Sources: the model's ``HybridJobQueueInfo.position`` ("Current position of the hybrid job
        in the jobs queue") and ``DeviceQueueInfo`` ("hybrid jobs ... in the queue for a given
        device"); the Braket developer guide ("When will my quantum task run?", Queue visibility):
        the hybrid jobs queue depth is "the total number of hybrid jobs currently queued on a
        device", and quantum tasks are processed in the order they are received. Unconfirmed, the
        emulator's reading: that jobs are ranked in creation order too, and per region (a
        ``local:`` simulator device has no AWS queue; its jobs are ranked the same way here).
        AWS's queue also holds other accounts' jobs, which local mode has none of. A job that is
        no longer QUEUED gets 1 (its queueInfo shows no position then).
        """
        jobs: list[HybridJob] = self._registry.all(SERVICE, job.region)  # type: ignore[assignment]
        queued = [j for j in jobs if j.status == "QUEUED" and j.device == job.device]  # in creation order
        return next((rank for rank, j in enumerate(queued, start=1) if j is job), 1)

    def cancel_job(self, job_arn_value: str, region: str | None = None) -> dict:
        """CancelJob: a running job goes CANCELLING, then CANCELLED once its process is gone.

        Raises:
            ValidationError: the ARN is malformed.
            ApiError: ResourceNotFoundException; ConflictException for a job that already ended.
        """
        job = self._find(job_arn_value, region)
        with job.lock:
            if job.status in ("COMPLETED", "FAILED"):
                raise ApiError(
                    "ConflictException", f"Job {job.arn} is in terminal state {job.status} and cannot be cancelled.", 409
                )
            if job.status == "CANCELLED":
                return {"jobArn": job.arn, "cancellationStatus": "CANCELLED"}
        job.request_stop()
        return {"jobArn": job.arn, "cancellationStatus": "CANCELLING"}

    def tags_of(self, arn: str, region: str) -> dict[str, str] | None:
        """A job's tags for ListTagsForResource (None: no job has that ARN here)."""
        job = self._registry.by_arn(arn)
        if job is None or job.service != SERVICE or job.region != region:
            return None
        return dict(job.request.get("tags") or {})

    def search_jobs(self, body: dict, region: str | None = None) -> dict:
        """SearchJobs with ``jobArn`` (EQUAL, CONTAINS) and ``createdAt`` (LT ... BETWEEN) filters.

        Raises:
            ValidationError: the request breaks the model, or a filter is not supported.
        """
        validation.validate_input(SERVICE, "SearchJobs", body)
        tests = [_predicate(f) for f in body["filters"]]
        jobs = [j for j in self._registry.all(SERVICE, region) if all(test(j) for test in tests)]
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        page, token = paginate(jobs, body.get("nextToken"), body.get("maxResults", DEFAULT_SEARCH_RESULTS))
        response: dict[str, Any] = {"jobs": [j.summary() for j in page]}  # type: ignore[attr-defined]
        if token:
            response["nextToken"] = token
        return response


LOCAL_MODE_RUNS = (
    "Local mode runs Braket script-mode jobs on an AWS-provided Braket image (the default image; "
    "algorithmSpecification.scriptModeConfig with a source and an entry point), byoc-executor jobs, "
    "and, in container mode, jobs on the image given with --image or one the container tool has locally."
)


def _semantic_problems(body: dict, region: str) -> list[str]:
    """What Braket checks beyond the model: image, device, role, S3 locations, channels, instance count."""
    spec = body["algorithmSpecification"]
    problems = validation.check_image_uri(spec.get("containerImage", {}).get("uri"), "algorithmSpecification.containerImage.uri")
    device = body["deviceConfig"]["device"]
    problems += validation.check_braket_device(device, "deviceConfig.device")
    if not problems and not devices.is_local_simulator(device) and devices.find(device, region) is None:
        # Unknown devices are refused (AWS's exact code and wording unconfirmed): the table is
        # devices.py's; a QPU is known only in its own region.
        problems.append(f"Value '{device}' at 'deviceConfig.device' failed to satisfy constraint: Device {device} does not exist in {region}")
    count = body["instanceConfig"].get("instanceCount")
    if isinstance(count, int) and count > braket_contract.MAX_INSTANCES:
        problems.append(
            f"Value '{count}' at 'instanceConfig.instanceCount' failed to satisfy constraint: "
            f"Member must have value less than or equal to {braket_contract.MAX_INSTANCES}"
        )
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
