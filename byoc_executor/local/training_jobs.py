"""SageMaker training jobs: Create/Describe/Stop/ListTrainingJobs (model ``sagemaker/2017-07-24``).

``TrainingJobStatus`` InProgress -> Completed | Failed, StopTrainingJob -> Stopping -> Stopped;
``SecondaryStatus`` Starting -> Downloading -> Training -> Uploading -> Completed | Failed |
Stopped | MaxRuntimeExceeded, each step recorded in ``SecondaryStatusTransitions`` (vocabulary
and status messages from the model's documentation of ``SecondaryStatus``). A managed spot job
that is interrupted (``Emulator.interrupt``) goes Training -> Interrupted -> Starting ... and
runs again. Warm pools: ``warm_pools.py``. ``ListTags`` answers a training job's ``Tags``
(DescribeTrainingJob does not return them).
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from byoc_executor.local import sagemaker_contract, validation, warm_pools
from byoc_executor.local.hosts import HostProcess
from byoc_executor.local.jobs import ACCOUNT_ID, ApiError, Ending, JobContext, JobRun, Launcher, Phase, instance_quota_problem, now
from byoc_executor.local.registry import JobRegistry, paginate

SERVICE = "sagemaker"
TERMINAL = ("Completed", "Failed", "Stopped")
DEFAULT_LIST_RESULTS = 10
NOT_FOUND = "Requested resource not found."  # what DescribeTrainingJob answers for an unknown name
DEFAULT_CHECKPOINT_PATH = sagemaker_contract.DEFAULT_CHECKPOINT_PATH
SPOT_BILLABLE_SHARE = 0.3  # what a spot job is billed, as a share of its training time (emulated savings: 70%)


def _resource_config(requested: dict) -> dict:
    """ResourceConfig as DescribeTrainingJob answers it: what was asked, with the volume's size
    and the warm pool's keep-alive made explicit (0 when not asked; unconfirmed which defaults AWS
    spells out)."""
    return {"InstanceCount": 1, "KeepAlivePeriodInSeconds": 0, **requested}


def _profiling_status(request: dict) -> str:
    """``Enabled`` when a ProfilerConfig that does not disable profiling was given, else ``Disabled``
    (the model's ProfilingStatus enum; the rule is unconfirmed)."""
    config = request.get("ProfilerConfig")
    return "Enabled" if config and not config.get("DisableProfiler") else "Disabled"


def refusal(request: dict, launcher: Launcher) -> str | None:
    """Why local mode cannot run this training job (None: it can): the launcher decides for its image."""
    ask = getattr(launcher, "refusal", None)
    return ask(SERVICE, request) if ask is not None else None


LOCAL_MODE_RUNS = (
    "Local mode runs SageMaker training jobs of byoc-executor and, in container mode, jobs whose "
    "TrainingImage the container tool has locally (started with `train`, as SageMaker does) or that run on --image."
)


def training_job_arn(region: str, name: str) -> str:
    """``arn:aws:sagemaker:<region>:123456789012:training-job/<name>``."""
    return f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}:training-job/{name}"


class TrainingJob(JobRun):
    """A SageMaker training job running ``byoc_entry train`` under the /opt/ml contract."""

    service = SERVICE
    log_group = sagemaker_contract.LOG_GROUP
    failure_reason_limit = sagemaker_contract.FAILURE_REASON_LIMIT

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.status = "InProgress"
        self.secondary = "Starting"
        self.last_modified = self.created_at
        self.transitions: list[dict] = []
        self.warm_pool_source: str | None = None  # the job whose warm pool this one reuses
        self.warm_pool_reused_by: str | None = None  # the job that took this one's warm pool
        self.warm_pool_reused_at: float | None = None
        self._transition("Starting", "Starting the training job")

    def _transition(self, status: str, message: str) -> None:
        stamp = now()
        if self.transitions and "EndTime" not in self.transitions[-1]:
            self.transitions[-1]["EndTime"] = stamp
        self.transitions.append({"Status": status, "StartTime": stamp, "StatusMessage": message})
        self.secondary = status
        self.last_modified = stamp

    def _message(self, message: str) -> None:
        self.transitions[-1]["StatusMessage"] = message
        self.last_modified = now()

    # --- the contract ------------------------------------------------------------------------------

    def channels(self) -> dict[str, str]:
        return {
            c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in self.request.get("InputDataConfig", [])
        }

    def hyperparameters(self) -> dict[str, str]:
        return dict(self.request.get("HyperParameters", {}))

    def results_dir(self, tree: Path | None = None) -> Path:
        return (tree or self.tree) / "opt" / "ml" / "model"

    def checkpoint_uri(self) -> str | None:
        return (self.request.get("CheckpointConfig") or {}).get("S3Uri") or None

    def checkpoint_dir(self, tree: Path) -> Path:
        local = (self.request.get("CheckpointConfig") or {}).get("LocalPath") or DEFAULT_CHECKPOINT_PATH
        return tree / local.lstrip("/")

    def instance_count(self) -> int:
        return int(self.request["ResourceConfig"].get("InstanceCount") or 1)

    def network_isolated(self) -> bool:
        return bool(self.request.get("EnableNetworkIsolation"))

    def interruptible(self) -> bool:
        return bool(self.request.get("EnableManagedSpotTraining"))

    def artifact_uri(self) -> str:
        return f"{self.request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{self.name}/output/model.tar.gz"

    def max_runtime(self) -> int:
        return int(self.request["StoppingCondition"]["MaxRuntimeInSeconds"])

    def instance_type(self) -> str:
        return self.request["ResourceConfig"]["InstanceType"]

    def uploads_on(self, ending: Ending) -> bool:
        return True  # SageMaker saves /opt/ml/model after a stop or a timeout too

    def contract_env(self, tree: Path) -> dict[str, str]:
        return {sagemaker_contract.ENV_TRAINING_JOB_NAME: self.name, **self.request.get("Environment", {})}

    def image(self) -> str | None:
        return (self.request.get("AlgorithmSpecification") or {}).get("TrainingImage")

    def host_failure(self, host: HostProcess, several: bool) -> str:
        """``AlgorithmError: <failure file>, exit code: <n>`` (``sagemaker_contract.failure_reason``).

        Without a failure file the reason carries no text at all (``AlgorithmError: , exit code:
        1``, as users report it): the process's last lines are in CloudWatch only, which is why the
        client must read its logs after the end. A signal is reported as a container runtime does
        (128 + the signal's number: 137 for SIGKILL).
        """
        code = host.code if host.code is not None else -1
        if code < 0:
            code = 128 - code
        return sagemaker_contract.failure_reason(host.failure_text(self.failure_reason_limit), code)

    # --- the vocabulary ----------------------------------------------------------------------------

    def on_phase(self, phase: Phase) -> None:
        if self.status == "Stopping":
            return
        if phase is Phase.STARTING:
            if self.secondary != "Starting":  # restarting after a spot interruption
                self._transition("Starting", "Starting the training job")
            if self.warm_start:
                # The emulator's wording: the real message for a reused warm pool is not documented.
                self._message(f"Reusing the warm pool of training job {self.warm_pool_source}: the instances are already provisioned")
            else:
                self._message("Preparing the instances for training")
        elif phase is Phase.DOWNLOADING:
            self._transition("Downloading", "Downloading input data")
        elif phase is Phase.RUNNING:
            self._transition("Training", "Training image download completed. Training in progress.")
        elif phase is Phase.UPLOADING:
            self._transition("Uploading", "Uploading generated training model")

    def on_interrupted(self) -> None:
        # The model's documentation of SecondaryStatus: "Interrupted - The job stopped because the
        # managed spot training instances were interrupted."
        self._transition(
            "Interrupted",
            "The job stopped because the managed spot training instances were interrupted; it restarts from its last checkpoint",
        )

    def on_stop_requested(self) -> None:
        self.status = "Stopping"
        self._transition("Stopping", "Stopping the training job")

    def on_end(self, ending: Ending, reason: str | None) -> None:
        if ending is Ending.COMPLETED:
            self.status = "Completed"
            self._transition("Completed", "Training job completed")
        elif ending is Ending.FAILED:
            self.status = "Failed"
            self._transition("Failed", f"Training job failed. Reason(s): {reason}")
        elif ending is Ending.STOPPED:
            self.status = "Stopped"
            self._transition("Stopped", "Training job stopped")
        else:
            self.status = "Stopped"
            self._transition(
                "MaxRuntimeExceeded",
                f"Training job stopped: it exceeded MaxRuntimeInSeconds ({self.max_runtime()} seconds)",
            )
        self.transitions[-1]["EndTime"] = self.transitions[-1]["StartTime"]

    # --- the API's shapes --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The DescribeTrainingJob response."""
        with self.lock:
            r = self.request
            response: dict[str, Any] = {
                "TrainingJobName": self.name,
                "TrainingJobArn": self.arn,
                "TrainingJobStatus": self.status,
                "SecondaryStatus": self.secondary,
                "RoleArn": r["RoleArn"],
                "AlgorithmSpecification": {"TrainingInputMode": "File", **r["AlgorithmSpecification"]},
                # KmsKeyId is answered "" when none was given (the SageMaker SDK v2's attach reads
                # it without a default; see sagemaker_contract.py [sdk-v2]).
                "OutputDataConfig": {"KmsKeyId": "", **r["OutputDataConfig"]},
                "ResourceConfig": _resource_config(r["ResourceConfig"]),
                "StoppingCondition": r["StoppingCondition"],
                # Required in the model's DescribeTrainingJobResponse: where model.tar.gz is (or will be).
                "ModelArtifacts": {"S3ModelArtifacts": self.artifact_uri()},
                "ProfilingStatus": _profiling_status(r),
                "CreationTime": self.created_at,
                "LastModifiedTime": self.last_modified,
                "SecondaryStatusTransitions": [dict(t) for t in self.transitions],
                "EnableNetworkIsolation": r.get("EnableNetworkIsolation", False),
                "EnableInterContainerTrafficEncryption": r.get("EnableInterContainerTrafficEncryption", False),
                "EnableManagedSpotTraining": r.get("EnableManagedSpotTraining", False),
            }
            for key in ("HyperParameters", "InputDataConfig", "VpcConfig", "CheckpointConfig", "Environment", "RetryStrategy",
                        "DebugHookConfig", "ProfilerConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations",
                        "TensorBoardOutputConfig", "ExperimentConfig", "RemoteDebugConfig", "InfraCheckConfig"):
                if key in r:
                    response[key] = r[key]
            if self.failure_reason:
                response["FailureReason"] = self.failure_reason
            if self.started_at is not None:
                response["TrainingStartTime"] = self.started_at
            if self.ended_at is not None and self.status in TERMINAL:
                response["TrainingEndTime"] = self.ended_at
                if self.started_at is not None:
                    seconds = max(1, int(self.ended_at - self.started_at))
                    response["TrainingTimeInSeconds"] = seconds
                    if self.interruptible():  # spot: (1 - Billable / Training) is the saving
                        response["BillableTimeInSeconds"] = max(1, int(seconds * SPOT_BILLABLE_SHARE))
                    else:
                        response["BillableTimeInSeconds"] = seconds
            pool = warm_pools.status(self, now(), self.context.timing.time_scale)
            if pool is not None:
                response["WarmPoolStatus"] = pool
            return response

    def tags(self) -> list[dict]:
        """The job's tags, as ListTags answers them."""
        return [dict(t) for t in self.request.get("Tags", [])]

    def summary(self) -> dict[str, Any]:
        """The TrainingJobSummary of ListTrainingJobs."""
        full = self.describe()
        keys = ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime", "LastModifiedTime",
                "TrainingJobStatus", "SecondaryStatus")
        return {k: full[k] for k in keys if k in full}

    def usage(self) -> dict[str, Any]:
        """:meth:`JobRun.usage`, with the warm pool's retained time (billed [sm-warm-pools]), in AWS
        seconds: ``retained`` so far, and ``committed``: what it will have cost if nothing reuses it."""
        report = super().usage()
        pool = warm_pools.status(self, now(), self.context.timing.time_scale)
        if pool is not None and "ResourceRetainedBillableTimeInSeconds" in pool:
            scale, count, keep = self.context.timing.time_scale, self.instance_count(), warm_pools.keep_alive(self.request)
            assert self.ended_at is not None
            until = self.warm_pool_reused_at if pool["Status"] == "Reused" else min(now(), self.ended_at + keep / scale)
            retained = (until - self.ended_at) * scale  # (the API's figure is whole wall seconds)
            committed = keep if pool["Status"] == "Available" else retained
            report["warm_pool"] = {
                "status": pool["Status"],
                "retained_instance_seconds": retained * count,
                "committed_instance_seconds": committed * count,
            }
        return report

    def admin_view(self) -> dict[str, Any]:
        with self.lock:
            return {"name": self.name, "service": SERVICE, "status": self.status, "pid": self.pid, "arn": self.arn}


class SageMakerApi:
    """The four training-job operations over the shared job registry."""

    def __init__(self, registry: JobRegistry, context: JobContext):
        self._registry = registry
        self._context = context
        self._lock = threading.Lock()

    def create_training_job(self, region: str, body: dict) -> dict:
        """CreateTrainingJob.

        Raises:
            ValidationError: the request breaks the model or a semantic rule.
            ApiError: ResourceInUse for a name already taken.
        """
        validation.validate_input(SERVICE, "CreateTrainingJob", body)
        validation.raise_if(_semantic_problems(body))
        _check_spot(body)
        name = body["TrainingJobName"]
        why = refusal(body, self._context.launcher)
        if why is not None:
            raise ApiError("ValidationException", f"Local mode cannot run this training job: {why}. {LOCAL_MODE_RUNS}")
        with self._lock:
            existing = self._registry.get(SERVICE, name, region)
            if existing is not None:
                raise ApiError(
                    "ResourceInUse",
                    "Training job names must be unique within an AWS account and region, and a training job "
                    f"with this name already exists ({existing.arn})",
                )
            resources = body["ResourceConfig"]
            over = instance_quota_problem(
                self._registry.all(SERVICE, region), resources["InstanceType"], int(resources.get("InstanceCount") or 1),
                self._context.timing.instance_quota,
            )
            if over is not None:
                raise ApiError("ResourceLimitExceeded", over)
            job = TrainingJob(
                name=name, arn=training_job_arn(region, name), region=region, request=body,
                tree=self._registry.tree_for(SERVICE, name), context=self._context,
            )
            pool = warm_pools.find_available(self._registry.all(SERVICE, region), body, now(), self._context.timing.time_scale)
            if pool is not None:
                with pool.lock:
                    pool.warm_pool_reused_by, pool.warm_pool_reused_at = name, now()
                    pool.last_modified = pool.warm_pool_reused_at
                job.warm_pool_source, job.warm_start = pool.name, True
            self._registry.add_new(job)
        job.start()
        return {"TrainingJobArn": job.arn}

    def _find(self, operation: str, body: dict, region: str | None = None) -> TrainingJob:
        validation.validate_input(SERVICE, operation, body)
        job = self._registry.get(SERVICE, body["TrainingJobName"], region)
        if job is None or job.hidden():
            raise ApiError("ValidationException", NOT_FOUND)
        return job  # type: ignore[return-value]

    def describe_training_job(self, body: dict, region: str | None = None) -> dict:
        """DescribeTrainingJob.

        Raises:
            ValidationError: a malformed name.
            ApiError: ValidationException "Requested resource not found." for an unknown name.
        """
        job = self._find("DescribeTrainingJob", body, region)
        ended = job.ended  # before the answer is made: it shows at least this
        answer = job.describe()
        job.described(ended)
        return answer

    def stop_training_job(self, body: dict, region: str | None = None) -> dict:
        """StopTrainingJob: SIGTERM, SIGKILL after the grace period, then Stopped.

        Raises:
            ValidationError: a malformed name.
            ApiError: ValidationException for an unknown name or a job that already ended.
        """
        job = self._find("StopTrainingJob", body, region)
        with job.lock:
            if job.status in TERMINAL:
                raise ApiError(
                    "ValidationException",
                    f"The request was rejected because the training job is in status {job.status}.",
                )
        job.request_stop()
        return {}

    def list_tags(self, body: dict, region: str | None = None) -> dict | None:
        """ListTags of a training job's ARN (None: not a training job's; moto answers).

        Raises:
            ApiError: ValidationException for a training job that does not exist.
        """
        arn = body.get("ResourceArn", "")
        if not isinstance(arn, str) or ":training-job/" not in arn:
            return None
        validation.validate_input(SERVICE, "ListTags", body)
        job = self._registry.get(SERVICE, arn.split(":training-job/", 1)[1], region)
        if job is None or job.arn != arn:
            raise ApiError("ValidationException", NOT_FOUND)
        tags: list[dict] = job.tags()  # type: ignore[attr-defined]
        page, token = paginate(tags, body.get("NextToken"), body.get("MaxResults", 50))
        response: dict[str, Any] = {"Tags": page}
        if token:
            response["NextToken"] = token
        return response

    def list_training_jobs(self, body: dict, region: str | None = None) -> dict:
        """ListTrainingJobs with its name, status and time filters, sorting and pagination.

        Raises:
            ValidationError: the request breaks the model.
        """
        validation.validate_input(SERVICE, "ListTrainingJobs", body)
        jobs: list[TrainingJob] = self._registry.all(SERVICE, region)  # type: ignore[assignment]
        if "NameContains" in body:
            jobs = [j for j in jobs if body["NameContains"].lower() in j.name.lower()]
        if "StatusEquals" in body:
            jobs = [j for j in jobs if j.status == body["StatusEquals"]]
        for key, attr, after in (
            ("CreationTimeAfter", "created_at", True), ("CreationTimeBefore", "created_at", False),
            ("LastModifiedTimeAfter", "last_modified", True), ("LastModifiedTimeBefore", "last_modified", False),
        ):
            if key in body:
                bound = _timestamp(body[key], key)
                jobs = [j for j in jobs if (getattr(j, attr) > bound) == after]
        sort_key = {"Name": lambda j: j.name, "Status": lambda j: j.status}.get(body.get("SortBy", ""), lambda j: j.created_at)
        jobs.sort(key=sort_key, reverse=body.get("SortOrder", "Ascending") == "Descending")
        page, token = paginate(jobs, body.get("NextToken"), body.get("MaxResults", DEFAULT_LIST_RESULTS))
        response: dict[str, Any] = {"TrainingJobSummaries": [j.summary() for j in page]}
        if token:
            response["NextToken"] = token
        return response


def _timestamp(value: Any, where: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError as e:
        raise validation.ValidationError([f"Value '{value}' at '{where}' failed to satisfy constraint: Member must be a timestamp"]) from e


def _check_spot(body: dict) -> None:
    """MaxWaitTimeInSeconds goes with managed spot training, and is at least MaxRuntimeInSeconds.

    Raises:
        ApiError: ValidationException. The first message is SageMaker's, as users report it; the
            second follows its style (the model's documentation: "It must be equal to or greater
            than MaxRuntimeInSeconds"), its exact wording unconfirmed.
    """
    stopping = body.get("StoppingCondition") or {}
    wait, runtime = stopping.get("MaxWaitTimeInSeconds"), stopping.get("MaxRuntimeInSeconds")
    if not body.get("EnableManagedSpotTraining"):
        if wait is not None:
            raise ApiError("ValidationException", "Invalid MaxWaitTimeInSeconds. It is only supported when EnableManagedSpotTraining is set to true")
        return
    if wait is None or (runtime is not None and wait < runtime):
        raise ApiError(
            "ValidationException",
            "Invalid MaxWaitTimeInSeconds. It must be present and be greater than or equal to MaxRuntimeInSeconds",
        )


def _semantic_problems(body: dict) -> list[str]:
    """What SageMaker checks beyond the model, for the jobs the emulator can run."""
    problems: list[str] = []
    spec = body.get("AlgorithmSpecification")
    if not spec or not spec.get("TrainingImage"):
        problems.append(
            "Value null at 'algorithmSpecification.trainingImage' failed to satisfy constraint: Member must not be "
            "null (the emulator runs bring-your-own-container jobs: give TrainingImage, not AlgorithmName)"
        )
    else:
        problems += validation.check_image_uri(spec["TrainingImage"], "algorithmSpecification.trainingImage")
        if spec.get("TrainingInputMode") == "Pipe":
            problems.append("Value 'Pipe' at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: the emulator supports File and FastFile input modes")
    resources = body.get("ResourceConfig") or {}
    for member, shown in (("InstanceType", "instanceType"), ("InstanceCount", "instanceCount"), ("VolumeSizeInGB", "volumeSizeInGB")):
        if resources.get(member) is None:
            problems.append(f"Value null at 'resourceConfig.{shown}' failed to satisfy constraint: Member must not be null")
    for member, shown in (("InstanceCount", "instanceCount"), ("VolumeSizeInGB", "volumeSizeInGB")):
        if isinstance(resources.get(member), int) and resources[member] < 1:
            problems.append(f"Value '{resources[member]}' at 'resourceConfig.{shown}' failed to satisfy constraint: Member must have value greater than or equal to 1")
    if resources.get("VolumeKmsKeyId") and resources.get("InstanceType"):
        # The model documents this rule but its shape does not carry it (sagemaker_contract.py
        # [model-volume-kms]); SageMaker's exact message for it is unconfirmed.
        why = sagemaker_contract.volume_kms_key_problem(resources["InstanceType"], resources["VolumeKmsKeyId"])
        if why is not None:
            problems.append(why)
    stopping = body.get("StoppingCondition") or {}
    if stopping.get("MaxRuntimeInSeconds") is None:
        problems.append("Value null at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must not be null")
    problems += validation.check_role_arn(body["RoleArn"], "roleArn")
    problems += validation.check_s3_uri(body["OutputDataConfig"]["S3OutputPath"], "outputDataConfig.s3OutputPath")
    if "CheckpointConfig" in body:
        problems += validation.check_s3_uri(body["CheckpointConfig"].get("S3Uri"), "checkpointConfig.s3Uri")
    seen: set[str] = set()
    for index, channel in enumerate(body.get("InputDataConfig", []), start=1):
        where = f"inputDataConfig.{index}.member"
        source = channel["DataSource"].get("S3DataSource")
        if source is None:
            problems.append(f"Value null at '{where}.dataSource.s3DataSource' failed to satisfy constraint: Member must not be null (the emulator reads S3 channels only)")
        else:
            problems += validation.check_s3_uri(source["S3Uri"], f"{where}.dataSource.s3DataSource.s3Uri")
            if source["S3DataType"] != "S3Prefix":
                problems.append(f"Value '{source['S3DataType']}' at '{where}.dataSource.s3DataSource.s3DataType' failed to satisfy constraint: the emulator supports S3Prefix only")
        if channel.get("InputMode") == "Pipe":
            problems.append(f"Value 'Pipe' at '{where}.inputMode' failed to satisfy constraint: the emulator supports File and FastFile input modes")
        if channel["ChannelName"] in seen:
            problems.append(f"Value '{channel['ChannelName']}' at '{where}.channelName' failed to satisfy constraint: Channel names must be unique")
        seen.add(channel["ChannelName"])
    return problems
