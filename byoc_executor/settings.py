"""The executor's settings: one typed model, its defaults, its documentation and its checks.

Every setting is a constructor argument of ``BYOCExecutor`` and a key of the ``[executors.byoc]``
section of covalent.conf. The README's configuration table is generated from ``SETTINGS`` (see
``settings_table()``), and a test checks that the README matches it.

Checks come in two tiers. ``check_shapes`` is pure (no I/O) and runs in the constructor, so a
typo fails at workflow definition. ``check_against_models`` also consults botocore's service
models on disk (the instance types each API accepts) and runs in ``run()`` before anything is
uploaded or created, and in ``byoc-executor doctor``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

from byoc_executor.errors import ConfigurationError

SERVICES = ("braket", "sagemaker")
ON_SERVER_EXIT = ("cancel", "keep")
# Default queue allowances (settings.effective_queue_timeout), in seconds. Not AWS limits: choices.
QUEUE_TIMEOUT_DEFAULT = 24 * 3600  # simulators and on-demand instances: a day is already abnormal
QUEUE_TIMEOUT_QPU = 7 * 24 * 3600  # QPU queues (and devices' availability windows) can take days
QUEUE_TIMEOUT_RESERVATION = 30 * 24 * 3600  # a Braket Direct reservation may be booked weeks ahead
QUEUE_TIMEOUT_MAX = 90 * 24 * 3600
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"

# API bounds, from the botocore models where they state them and from the service docs where not.
BRAKET_MAX_RUNTIME = 432_000  # braket/2019-09-01 JobStoppingCondition.maxRuntimeInSeconds max
SAGEMAKER_MAX_RUNTIME = 2_419_200  # 28 days: SageMaker's documented limit (not in the model)
BRAKET_MAX_INSTANCES = 5
SAGEMAKER_MAX_KEEP_ALIVE = 21_600  # sagemaker/2017-07-24 ResourceConfig.KeepAlivePeriodInSeconds max

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+$")
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?P<ref>:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?$"
)
_DEVICE_ARN = re.compile(
    r"^arn:aws[a-z\-]*:braket:[a-z0-9-]*:(\d{12})?:device/"
    r"(qpu|quantum-simulator)/[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+$"
)
_LOCAL_DEVICE = re.compile(r"^local:[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+$")
# What the client and the emulator both accept as a Braket device.
BRAKET_DEVICE = re.compile(f"{_DEVICE_ARN.pattern}|{_LOCAL_DEVICE.pattern}")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,511}$")
# s3://bucket/prefix, or an https:// S3 URL of a bucket (virtual-hosted or path style): both job
# APIs' models allow either (Braket S3Path and SageMaker S3Uri: "(https|s3)://([^/]+)/?(.*)").
S3_URI = re.compile(
    r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
    r"|https://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com"
    r"|https://s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$"
)
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
# KMS keys as the fields that take them accept them (botocore sagemaker/2017-07-24
# OutputDataConfig.KmsKeyId: key id, key ARN, alias name, alias ARN; ResourceConfig.VolumeKmsKeyId:
# key id or key ARN only).
_KMS_KEY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|^mrk-[0-9a-f]{32}$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z\-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
_KMS_ALIAS = re.compile(r"^(arn:aws[a-z\-]*:kms:[a-z0-9-]+:\d{12}:)?alias/[A-Za-z0-9/_-]+$")
# Tags (S3 object tags, SageMaker's Tag shape, Braket's TagsMap): keys 1-128 characters, values at
# most 256, letters, digits, spaces and _.:/=+-@; the aws: prefix is AWS's own.
_TAG_TEXT = re.compile(r"^[\w\s.:/=+\-@]*$")
TAG_KEY_MAX, TAG_VALUE_MAX = 128, 256
JOB_TAGS_MAX = 50  # CreateTrainingJob Tags (TagList max 50); Braket allows at most 50 per resource
OBJECT_TAGS_MAX = 10  # S3: an object carries at most 10 tags
BYOC_TAG_PREFIX = "byoc:"
# The tags byoc-executor puts on every job and S3 object (services.stage): dispatch, node, executor.
BYOC_OBJECT_TAGS = 3
BYOC_JOB_TAGS = 4  # the object tags and the server's
# SageMaker's Environment (TrainingEnvironmentMap): at most 100 entries, keys and values at most 512.
SAGEMAKER_ENV_MAX, SAGEMAKER_ENV_VALUE_MAX = 100, 512
# Braket has no environment field: it travels as one JSON hyperparameter (HyperParametersValueString
# max 2500 in braket/2019-09-01).
BRAKET_HP_VALUE_MAX = 2500
_RESERVATION = re.compile(r"^arn:aws[a-z\-]*:braket:[a-z0-9-]+:\d{12}:reservation/[A-Za-z0-9-]+$")
# Options one service has and the other does not, with how the other is told so.
_SAGEMAKER_ONLY = {
    "use_spot": "Braket hybrid jobs have no managed spot capacity",
    "max_wait": "it belongs to SageMaker managed spot training",
    "keep_alive_period": "Braket hybrid jobs have no warm pools",
    "subnets": "Braket hybrid jobs have no VPC configuration",
    "security_group_ids": "Braket hybrid jobs have no VPC configuration",
    "enable_network_isolation": "Braket hybrid jobs have no network isolation setting",
    "encrypt_inter_container_traffic": "Braket hybrid jobs have no such setting",
}


def _setting(default: Any, doc: str, **kw: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass
class Settings:
    """Everything one executor needs to submit and follow a job. Plain JSON-able values only."""

    service: str = _setting("braket", 'Which job API runs the electron: "braket" (hybrid job) or "sagemaker" (training job).')
    image_uri: str = _setting("", "ECR URI of the job image (built from container/). Braket needs a private ECR image with a tag.", required=True)
    s3_bucket_name: str = _setting("", "Bucket for payloads and results. Must exist; the executor never creates AWS resources.", required=True)
    s3_prefix: str = _setting("byoc-executor", "Key prefix under which each task gets `<prefix>/<dispatch_id>/node-<node_id>/`.")
    role_arn: str = _setting("", "Execution role the job assumes (terraform/ creates one per service).", required=True)
    region: str = _setting("", "AWS region. Empty: the profile's or AWS_DEFAULT_REGION; us-east-1 in local mode.")
    profile: str = _setting("", "Named profile from the AWS config files. Empty: the default credential chain.")
    credentials_file: str = _setting("", "Path of a shared credentials file to use instead of ~/.aws/credentials.")
    device: str = _setting(SV1, 'Braket only: the device the task\'s circuits use (a QPU or simulator ARN, or "local:<provider>/<simulator>").')
    instance_type: str = _setting("ml.m5.large", "Instance type of the job (ml.*). GPU types (ml.g5, ml.p4d, ...) for GPU tasks.")
    instance_count: int = _setting(1, "Number of instances (Braket: at most 5).")
    volume_size_gb: int = _setting(30, "Size of the job's storage volume, GB.")
    max_runtime: int = _setting(3600, "Seconds the job may run before the service stops it (Braket <= 432000, SageMaker <= 2419200).")
    poll_freq: float = _setting(10.0, "The longest pause, in seconds, between two status calls; polling starts faster and backs off to this.")
    environment: dict = _setting({}, "Environment variables for the task (string to string).")
    tags: dict = _setting({}, "Tags for the job (string to string).")
    endpoint_url: str = _setting("", "One endpoint for every AWS service (local mode and tests: the emulator's URL). Empty: AWS itself.")
    keep_artifacts: bool = _setting(False, "Keep the task's S3 artifacts after its result was fetched and verified (they are always kept after a failure).")
    use_spot: bool = _setting(False, "SageMaker only: managed spot training (much cheaper; may be interrupted and restarted: use checkpoint_s3_uri to resume).")
    max_wait: int = _setting(0, "SageMaker spot: seconds to wait for spot capacity plus run time, at least max_runtime. 0: twice max_runtime.")
    checkpoint_s3_uri: str = _setting("", "S3 URI synced with the job's checkpoint directory ($BYOC_CHECKPOINT_DIR in the task) before and after it runs, so a task can resume.")
    keep_alive_period: int = _setting(0, "SageMaker only: seconds (at most 21600) a warm pool keeps the instance after the job, for the next electron with the same settings; billed while kept.")
    subnets: list = _setting([], "SageMaker only: VPC subnet ids for the job (with security_group_ids).")
    security_group_ids: list = _setting([], "SageMaker only: VPC security group ids for the job (with subnets).")
    enable_network_isolation: bool = _setting(False, "SageMaker only: the container gets no network access (the payload still arrives as an input channel).")
    encrypt_inter_container_traffic: bool = _setting(False, "SageMaker only: encrypt traffic between the job's instances (instance_count > 1).")
    kms_key_id: str = _setting("", "KMS key for the S3 payloads and results (SSE-KMS on every upload), the job's output and (SageMaker) its volume.")
    reservation_arn: str = _setting("", "Braket only: the ARN of a Braket Direct reservation; the job's quantum tasks run in that dedicated window.")
    run_on_all_hosts: bool = _setting(False, "With instance_count > 1, run the task on every host (BYOC_CURRENT_HOST / BYOC_HOSTS tell it which); default: on the first host only.")
    queue_timeout: int = _setting(0, "Seconds a job may wait in the service's queue (QUEUED; SageMaker: Starting) before the executor cancels it. 0: a default for the kind of job (README, \"Deadlines\").")
    on_server_exit: str = _setting("cancel", 'What happens to a running job when the Covalent server shuts down: "cancel" it (the node ends CANCELLED), or "keep" it running (collect its value later with `byoc-executor result`).')
    tag_objects: bool = _setting(True, "Put `tags` on the task's S3 objects too (S3 allows 10 tags per object, 3 of them byoc-executor's: at most 7 of yours). false: tag only the jobs.")

    # -- checks -----------------------------------------------------------------------------------

    def check_shapes(self, complete: bool = True) -> None:
        """Check every setting's type and shape without any I/O.

        Args:
            complete: also require the settings that have no default. The constructor passes
                False: Covalent's server builds every executor from the ``[executors.byoc]``
                section first (which may hold only defaults) and then overwrites it with the
                client's settings, so a missing value is only an error when the job is submitted.

        Raises:
            ConfigurationError: the first setting that is wrong, with how to fix it.
        """
        problems = self.shape_problems(complete)
        if problems:
            raise problems[0]

    def shape_problems(self, complete: bool = True) -> list[ConfigurationError]:
        """Every setting that is wrong (``check_shapes`` raises the first; ``doctor`` lists them all)."""
        if self.service not in SERVICES:
            return [ConfigurationError("service", f"is {self.service!r}", 'use "braket" or "sagemaker"')]
        problems: list[ConfigurationError] = []
        add = problems.append
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                add(ConfigurationError(f.name, f"must be true or false, got {value!r}", "give a boolean"))
            elif f.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                add(ConfigurationError(f.name, f"must be a number, got {value!r}", "give a number"))
            elif f.type == "int" and not float(value).is_integer():
                add(ConfigurationError(f.name, f"must be a whole number, got {value!r}", "give an integer"))
            elif f.type == "str" and not isinstance(value, str):
                add(ConfigurationError(f.name, f"must be a string, got {type(value).__name__}", "give a string"))
            elif f.type == "list" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                add(ConfigurationError(f.name, f"must be a list of strings, got {value!r}", 'e.g. ["subnet-0abc..."]'))
            elif f.type == "dict" and not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
                add(ConfigurationError(f.name, f"must map strings to strings, got {value!r}", 'e.g. {"KEY": "value"}'))
            elif f.metadata.get("required") and not value and complete:
                add(ConfigurationError(f.name, "is required", f"pass {f.name}=... or set it in the [executors.byoc] section of covalent.conf"))
        if problems:
            return problems  # the checks below assume the types are right

        image = ECR_IMAGE.match(self.image_uri)
        if not image and self.image_uri:
            add(ConfigurationError(
                "image_uri",
                f"{self.image_uri!r} is not an ECR image URI",
                "use <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>, as printed by container/build_and_push.sh",
            ))
        if image and self.service == "braket" and not image.group("ref"):
            add(ConfigurationError("image_uri", f"{self.image_uri!r} has no tag or digest", "Braket needs one: append :<tag>"))
        if self.s3_bucket_name and not _BUCKET.match(self.s3_bucket_name):
            add(ConfigurationError("s3_bucket_name", f"{self.s3_bucket_name!r} is not a valid bucket name", "use the bucket name alone, without s3://"))
        if self.s3_prefix.startswith("/") or "//" in self.s3_prefix:
            add(ConfigurationError("s3_prefix", f"{self.s3_prefix!r} has an empty path segment", "drop leading and doubled slashes"))
        if self.role_arn and not ROLE_ARN.match(self.role_arn):
            add(ConfigurationError("role_arn", f"{self.role_arn!r} is not an IAM role ARN", "use arn:aws:iam::<account>:role/<name>"))
        if self.region and not _REGION.match(self.region):
            add(ConfigurationError("region", f"{self.region!r} is not an AWS region name", "e.g. us-east-1"))
        if self.service == "braket" and not BRAKET_DEVICE.match(self.device):
            add(ConfigurationError(
                "device",
                f"{self.device!r} is not a Braket device",
                "use a device ARN such as arn:aws:braket:::device/quantum-simulator/amazon/sv1, or local:<provider>/<simulator>",
            ))
        if not self.instance_type.startswith("ml."):
            add(ConfigurationError("instance_type", f"{self.instance_type!r} is not a training instance type", "use an ml.* type, e.g. ml.m5.large"))
        if self.instance_count < 1 or (self.service == "braket" and self.instance_count > BRAKET_MAX_INSTANCES):
            limit = f"1 to {BRAKET_MAX_INSTANCES}" if self.service == "braket" else "at least 1"
            add(ConfigurationError("instance_count", f"is {self.instance_count}", f"use {limit}"))
        if self.volume_size_gb < 1:
            add(ConfigurationError("volume_size_gb", f"is {self.volume_size_gb}", "use at least 1"))
        limit = BRAKET_MAX_RUNTIME if self.service == "braket" else SAGEMAKER_MAX_RUNTIME
        if not 1 <= self.max_runtime <= limit:
            add(ConfigurationError("max_runtime", f"is {self.max_runtime} s", f"{self.service} accepts 1 to {limit} seconds"))
        if not 0 <= self.queue_timeout <= QUEUE_TIMEOUT_MAX:
            add(ConfigurationError("queue_timeout", f"is {self.queue_timeout} s", f"use 0 (the default for the kind of job) to {QUEUE_TIMEOUT_MAX} seconds"))
        if self.on_server_exit not in ON_SERVER_EXIT:
            add(ConfigurationError("on_server_exit", f"is {self.on_server_exit!r}", 'use "cancel" or "keep"'))
        if not 0 < self.poll_freq <= 3600:
            add(ConfigurationError("poll_freq", f"is {self.poll_freq}", "use a number of seconds above 0 and at most 3600"))
        problems += self._environment_problems()
        problems += self._tag_problems()
        if self.endpoint_url:
            url = urlparse(self.endpoint_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                add(ConfigurationError("endpoint_url", f"{self.endpoint_url!r} is not an http(s) URL", "e.g. http://127.0.0.1:4566"))
        problems += self._job_option_problems()
        return problems

    def _environment_problems(self) -> list[ConfigurationError]:
        """The variable names, and the limits of the field that carries them to the job."""
        bad_names = [name for name in self.environment if not _ENV_NAME.match(name)]
        if bad_names:
            return [ConfigurationError("environment", f"{bad_names[0]!r} is not a valid variable name", "use letters, digits and _")]
        if self.service == "sagemaker":
            if len(self.environment) > SAGEMAKER_ENV_MAX:
                return [ConfigurationError("environment", f"has {len(self.environment)} variables", f"SageMaker's Environment takes at most {SAGEMAKER_ENV_MAX}")]
            long = [k for k, v in self.environment.items() if len(v) > SAGEMAKER_ENV_VALUE_MAX]
            if long:
                return [ConfigurationError(
                    "environment", f"value of {long[0]!r} has {len(self.environment[long[0]])} characters",
                    f"SageMaker's Environment takes values of at most {SAGEMAKER_ENV_VALUE_MAX}: pass large values as an argument of the electron",
                )]
        elif self.environment and len(braket_environment(self.environment)) > BRAKET_HP_VALUE_MAX:
            size = len(braket_environment(self.environment))
            return [ConfigurationError(
                "environment", f"takes {size} characters as JSON",
                f"Braket carries it in one hyperparameter of at most {BRAKET_HP_VALUE_MAX} characters: pass large values as an argument of the electron",
            )]
        return []

    def _tag_problems(self) -> list[ConfigurationError]:
        """Tag keys and values as AWS accepts them, and how many fit on a job and on an S3 object."""
        for key, value in self.tags.items():
            if not 1 <= len(key) <= TAG_KEY_MAX or len(value) > TAG_VALUE_MAX or not (_TAG_TEXT.match(key) and _TAG_TEXT.match(value)):
                return [ConfigurationError(
                    "tags", f"has the tag {key!r}: {value!r}",
                    f"keys take 1-{TAG_KEY_MAX} and values at most {TAG_VALUE_MAX} letters, digits, spaces and _.:/=+-@",
                )]
            for reserved in ("aws:", BYOC_TAG_PREFIX):
                if key.lower().startswith(reserved):
                    return [ConfigurationError("tags", f"has the key {key!r}", f"the prefix {reserved} is reserved: rename it")]
        room = JOB_TAGS_MAX - BYOC_JOB_TAGS
        if len(self.tags) > room:
            return [ConfigurationError("tags", f"has {len(self.tags)} tags", f"a job carries at most {JOB_TAGS_MAX}, {BYOC_JOB_TAGS} of them byoc-executor's: give at most {room}")]
        room = OBJECT_TAGS_MAX - BYOC_OBJECT_TAGS
        if self.tag_objects and len(self.tags) > room:
            return [ConfigurationError(
                "tags", f"has {len(self.tags)} tags, and tag_objects puts them on the task's S3 objects",
                f"S3 allows {OBJECT_TAGS_MAX} tags per object, {BYOC_OBJECT_TAGS} of them byoc-executor's: give at most {room}, "
                "or set tag_objects = false to tag only the jobs",
            )]
        return []

    def _job_option_problems(self) -> list[ConfigurationError]:
        """The options of issue 7: spot, warm pools, networking, encryption, checkpoints, reservations."""
        problems: list[ConfigurationError] = []
        add = problems.append
        if self.service == "braket":
            for name, why in _SAGEMAKER_ONLY.items():
                if getattr(self, name):
                    add(ConfigurationError(name, f"is set, but {why}", 'leave it out, or use service="sagemaker"'))
        if self.service == "sagemaker" and self.reservation_arn:
            add(ConfigurationError("reservation_arn", "is set, but reservations are a Braket feature", 'leave it out, or use service="braket"'))
        if self.service == "sagemaker":
            if self.max_wait and not self.use_spot:
                add(ConfigurationError("max_wait", "is set without use_spot", "set use_spot = true, or leave max_wait out"))
            if self.use_spot and self.max_wait and self.max_wait < self.max_runtime:
                add(ConfigurationError("max_wait", f"({self.max_wait} s) is less than max_runtime ({self.max_runtime} s)", "SageMaker needs max_wait >= max_runtime"))
            if self.use_spot and self.keep_alive_period:
                add(ConfigurationError("keep_alive_period", "is set with use_spot", "SageMaker warm pools are not available for managed spot training: drop one"))
            if not 0 <= self.keep_alive_period <= SAGEMAKER_MAX_KEEP_ALIVE:
                add(ConfigurationError("keep_alive_period", f"is {self.keep_alive_period} s", f"use 0 to {SAGEMAKER_MAX_KEEP_ALIVE} seconds"))
            if bool(self.subnets) != bool(self.security_group_ids):
                missing = "security_group_ids" if self.subnets else "subnets"
                add(ConfigurationError(missing, "is empty while the other VPC setting is given", "give both subnets and security_group_ids"))
            for name, pattern, most, example in (("subnets", _SUBNET, 16, "subnet-0abc1234"), ("security_group_ids", _SECURITY_GROUP, 5, "sg-0abc1234")):
                values = getattr(self, name)
                bad = [v for v in values if not pattern.match(v)]
                if bad or len(values) > most:
                    problem = f"has {bad[0]!r}" if bad else f"has {len(values)} entries"
                    add(ConfigurationError(name, problem, f"use at most {most} ids such as {example}"))
        if self.checkpoint_s3_uri and not S3_URI.match(self.checkpoint_s3_uri):
            add(ConfigurationError("checkpoint_s3_uri", f"{self.checkpoint_s3_uri!r} is not an S3 URI", "use s3://<bucket>/<prefix> (or an https:// S3 URL of the bucket)"))
        if self.kms_key_id:
            problems += self._kms_problems()
        if self.reservation_arn and self.service == "braket" and not _RESERVATION.match(self.reservation_arn):
            add(ConfigurationError("reservation_arn", f"{self.reservation_arn!r} is not a Braket reservation ARN", "use arn:aws:braket:<region>:<account>:reservation/<id>"))
        return problems

    def _kms_problems(self) -> list[ConfigurationError]:
        key = self.kms_key_id
        if not (_KMS_KEY_ID.match(key) or _KMS_KEY_ARN.match(key) or _KMS_ALIAS.match(key)):
            return [ConfigurationError("kms_key_id", f"{key!r} is not a KMS key", "use a key ARN, a key id, alias/<name> or an alias ARN")]
        if self.encrypts_volume and _KMS_ALIAS.match(key):
            return [ConfigurationError(
                "kms_key_id", f"{key!r} is an alias, and it also encrypts the {self.instance_type} job's volume",
                "SageMaker's VolumeKmsKeyId takes a key id or key ARN only: give the key's ARN",
            )]
        return []

    @property
    def encrypts_volume(self) -> bool:
        """Whether ``kms_key_id`` goes to SageMaker's ``VolumeKmsKeyId``: only for an instance type
        without local instance storage, whose volume SageMaker may encrypt with it."""
        return bool(self.kms_key_id) and self.service == "sagemaker" and not has_instance_storage(self.instance_type)

    @property
    def effective_queue_timeout(self) -> int:
        """``queue_timeout``, or the default for this kind of job (README, "Deadlines").

        Nothing is billed while a job waits, but a forgotten one may start days later and then
        bill. QPU queues and Braket Direct reservations legitimately take days; SageMaker's spot
        jobs are bounded by the service itself (MaxWaitTimeInSeconds includes the wait).
        """
        if self.queue_timeout:
            return self.queue_timeout
        if self.service == "braket":
            if self.reservation_arn:
                return QUEUE_TIMEOUT_RESERVATION
            return QUEUE_TIMEOUT_QPU if ":device/qpu/" in self.device else QUEUE_TIMEOUT_DEFAULT
        if self.use_spot:
            return self.spot_max_wait
        return QUEUE_TIMEOUT_DEFAULT

    @property
    def spot_max_wait(self) -> int:
        """MaxWaitTimeInSeconds for a spot job: ``max_wait``, or twice ``max_runtime``."""
        return self.max_wait or min(2 * self.max_runtime, SAGEMAKER_MAX_RUNTIME)

    def model_problems(self) -> list[ConfigurationError]:
        """What botocore's service models say the API would refuse (reads botocore's data files)."""
        accepted = instance_types(self.service)
        if self.instance_type in accepted:
            return []
        near = sorted(t for t in accepted if t.split(".")[1:2] == self.instance_type.split(".")[1:2])
        hint = f"{self.service} accepts e.g. {', '.join(near[:6] or sorted(accepted)[:6])}"
        return [ConfigurationError("instance_type", f"{self.instance_type!r} is not an instance type {self.service} jobs accept", hint)]

    def check_against_models(self) -> None:
        """``check_shapes``, plus what botocore's service models say the API accepts.

        Raises:
            ConfigurationError: naming the setting and the accepted values.
        """
        self.check_shapes()
        problems = self.model_problems()
        if problems:
            raise problems[0]

    # -- derived values ---------------------------------------------------------------------------

    @property
    def is_local_endpoint(self) -> bool:
        """True when ``endpoint_url`` points at this machine (the emulator): no instance metadata then."""
        return bool(self.endpoint_url) and is_loopback_host(urlparse(self.endpoint_url).hostname or "")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SETTINGS = tuple(fields(Settings))
SETTING_NAMES = tuple(f.name for f in SETTINGS)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Instance families whose instances have local NVMe instance storage, which SageMaker uses instead of
# an EBS volume and which is encrypted by the instance's hardware. SageMaker refuses VolumeKmsKeyId for
# them (botocore sagemaker/2017-07-24 ResourceConfig.VolumeKmsKeyId; ResourceConfig.VolumeSizeInGB names
# ml.p4d, ml.g4dn and ml.g5), per EC2's instance store table. A family not listed is taken to have EBS
# only: the key is sent, and should AWS disagree it refuses the request at once (no job, no cost).
_INSTANCE_STORE_FAMILIES = frozenset({
    "g4dn", "g5", "g6", "g6e", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300", "p6e-gb200",
    "trn1", "trn1n", "trn2",
})
_D_FAMILY = re.compile(r"^[a-z]+\d+[a-z]*d$")  # m5d, c5d, r5d, m6id, c6id, r6id, ...


def has_instance_storage(instance_type: str) -> bool:
    """Whether ``ml.<family>.<size>`` has local instance storage (see _INSTANCE_STORE_FAMILIES)."""
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    return family in _INSTANCE_STORE_FAMILIES or bool(_D_FAMILY.match(family))


def braket_environment(environment: dict[str, str]) -> str:
    """How ``environment`` travels in a Braket job's hyperparameters: one JSON object."""
    import json

    return json.dumps(environment, sort_keys=True)


def defaults() -> dict[str, Any]:
    """Every setting's default, as written to the ``[executors.byoc]`` section."""
    return Settings().to_dict()


_MODELS_LOCK = threading.Lock()


def models_loaded(service: str) -> bool:
    """Whether ``instance_types(service)`` has been read in this process (so it costs no I/O now)."""
    return service in _models_read


_models_read: set[str] = set()


def instance_types(service: str) -> frozenset[str]:
    """The instance types the service's botocore model enumerates (reads botocore's data files).

    Read once per process: electrons that start together wait for the first read (~100 ms of CPU
    for SageMaker's model) instead of each doing it.
    """
    with _MODELS_LOCK:
        types = _instance_types(service)
        _models_read.add(service)
        return types


@functools.lru_cache(maxsize=None)
def _instance_types(service: str) -> frozenset[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("braket" if service == "braket" else "sagemaker")
    shape = "InstanceType" if service == "braket" else "TrainingInstanceType"
    return frozenset(model.shape_for(shape).enum)


def settings_table() -> str:
    """The README's configuration table, in Markdown."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for f in SETTINGS:
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        shown = "(required)" if f.metadata.get("required") else f"`{default!r}`" if default != "" else '`""`'
        rows.append(f"| `{f.name}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
