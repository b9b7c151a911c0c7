"""What SageMaker gives a training job's container, stated from AWS's own sources.

The emulator's reading of the SageMaker training contract; it imports nothing of the client's
(``tests/test_contract.py`` holds the two readings against each other).

Sources:

- [toolkit-env] sagemaker-training-toolkit ``src/sagemaker_training/environment.py``:
  ``BASE_PATH_ENV = "SAGEMAKER_BASE_DIR"`` moves the base directory, ``/opt/ml`` by default;
  ``model_dir = <base>/model``, ``input_config_dir = <base>/input/config`` holding
  ``hyperparameters.json``, ``resourceconfig.json`` and ``inputdataconfig.json``, channels in
  ``<base>/input/data/<channel>``, ``output_dir = <base>/output``, ``output_data_dir =
  <base>/output/data``.
- [toolkit-files] sagemaker-training-toolkit ``src/sagemaker_training/files.py``
  (``write_failure_file``): the failure text goes to ``<base>/output/failure``.
- [docs-train] SageMaker developer guide, "How Amazon SageMaker Runs Your Training Image": the
  image is run as ``docker run image train``; "How Amazon SageMaker Provides Training
  Information": hyperparameters are all strings in ``hyperparameters.json``; "How Amazon
  SageMaker Processes Training Output": ``/opt/ml/model`` is tarred to
  ``<S3OutputPath>/<job>/output/model.tar.gz``, the failure file's text is the job's
  ``FailureReason``, a non-zero exit code fails the job.
- [model] botocore ``sagemaker/2017-07-24/service-2.json``: ``FailureReason`` is at most 1024
  characters; ``DescribeTrainingJobResponse`` requires ``ModelArtifacts`` (so it is always
  present); ``ProfilingStatus`` is ``Enabled``/``Disabled``; ``S3Uri`` pattern
  ``(https|s3)://([^/]+)/?(.*)``.
- [sdk-v2] SageMaker Python SDK v2 ``sagemaker/estimator.py`` ``_prepare_init_params_from_job_
  description`` reads ``OutputDataConfig["KmsKeyId"]`` without a default: the service returns the
  key, as ``""`` when none was given (observed in the SDK's own test fixtures; unconfirmed in AWS's
  documentation).
- [sdk-v2-local] SageMaker Python SDK v2 ``sagemaker/modules/local_core/local_container.py``: its
  local mode gives the container ``TRAINING_JOB_NAME`` and ``AWS_REGION`` (what the service sets
  beyond these is unconfirmed here).
- [logs] SageMaker developer guide, "Log Amazon SageMaker Events with Amazon CloudWatch": log
  group ``/aws/sagemaker/TrainingJobs``, streams ``<job>/algo-<n>-<epoch seconds>``.
- [model-volume-kms] botocore ``sagemaker/2017-07-24`` ``ResourceConfig.VolumeKmsKeyId``: "You can't
  request a VolumeKmsKeyId when using an instance type with local storage" (local storage volumes
  are encrypted by a hardware module on the instance), and the key "can be in any of the following
  formats": a KMS key id or a KMS key ARN (``OutputDataConfig.KmsKeyId`` lists aliases as well;
  this one does not). The shape itself (``KmsKeyId``) is only ``[a-zA-Z0-9:/_-]*``, so the rule is
  in the documentation, not in what botocore validates. ``ResourceConfig.VolumeSizeInGB`` names
  ``ml.p4d``, ``ml.g4dn`` and ``ml.g5`` as families with NVMe instance storage, ``ml.c5`` and
  ``ml.p2`` as EBS-only.
- [ec2-store] EC2 user guide, "Instance store volume limits for EC2 instances"
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-store-volumes.html), which the
  model's note points to, and the instance type specifications
  (https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html, ``gp.html``, ``co.html``,
  ``mo.html``): which families have instance store volumes; "Amazon EC2 instance type naming
  conventions" (https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html):
  the ``d`` capability letter means instance store volumes (m5d, r5d, c6id, ...).
- [kms-ids] AWS KMS developer guide, "Key identifiers (KeyId)": a key id is a UUID, or ``mrk-``
  and 32 hex digits for a multi-Region key; a key ARN is
  ``arn:<partition>:kms:<region>:<account>:key/<key id>``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
"""[toolkit-env]: where ``/opt/ml`` is when it is not ``/opt/ml``."""
OPT_ML = PurePosixPath("/opt/ml")
HYPERPARAMETERS_FILE = "input/config/hyperparameters.json"
RESOURCE_CONFIG_FILE = "input/config/resourceconfig.json"
INPUT_DATA_CONFIG_FILE = "input/config/inputdataconfig.json"
INPUT_DATA_DIR = "input/data"
MODEL_DIR = "model"
OUTPUT_DIR = "output"
OUTPUT_DATA_DIR = "output/data"
FAILURE_FILE = "output/failure"
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
"""The model's ``CheckpointConfig.LocalPath`` default."""
TRAIN_COMMAND = "train"
"""[docs-train]: the argument the image is started with."""
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ENV_TRAINING_JOB_NAME = "TRAINING_JOB_NAME"
"""[sdk-v2-local]: the job's name, in the container's environment."""
FAILURE_REASON_LIMIT = 1024
"""[model] ``FailureReason`` max."""


def log_stream(job_name: str, host: str, epoch: int) -> str:
    """``<job>/<host>-<epoch>`` ([logs])."""
    return f"{job_name}/{host}-{epoch}"


def failure_reason(failure_text: str | None, exit_code: int) -> str:
    """The ``FailureReason`` of a job whose algorithm failed.

    SageMaker reads ``AlgorithmError: <failure file text>, exit code: <n>`` (the form users see;
    the wording around the failure text is unconfirmed in AWS's documentation), cut to the
    model's 1024 characters.
    """
    text = (failure_text or "").strip()
    reason = f"AlgorithmError: {text}, exit code: {exit_code}" if text else f"AlgorithmError: , exit code: {exit_code}"
    return reason[:FAILURE_REASON_LIMIT]


INSTANCE_STORE_FAMILIES = frozenset({
    "g4dn", "g5", "g6", "g6e",  # [model-volume-kms] names g4dn and g5; [ec2-store] lists NVMe for each
    "p3dn", "p4d", "p4de", "p5", "p5e", "p5en",  # [model-volume-kms] names p4d; [ec2-store]
    "p6-b200", "p6-b300", "p6e-gb200",  # [ec2-store] lists NVMe instance store for P6-B200; for the other two, unconfirmed
    "trn1", "trn1n", "trn2",  # [ec2-store]
})
"""The ``ml.<family>`` families of the model's ``TrainingInstanceType`` enum with local instance
storage, besides those the ``d`` letter names ([ec2-store]). The other families of the enum
(c4 ... c8i-flex, m4 ... m8i-flex, r5 ... r8i-flex, p2, p3, t3) are EBS-only in [ec2-store]. ml.g7
and ml.g7e are not listed: whether they have instance storage is unconfirmed here, so the emulator
accepts a key for them (AWS, should it disagree, refuses the request at once, at no cost)."""
_D_CAPABILITY = re.compile(r"[a-z]+\d+[a-z]*d")  # [ec2-store] naming: m5d, r5d, c6id, m6id, ...
_KMS_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}")
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})")


def has_instance_storage(instance_type: str) -> bool:
    """Whether ``ml.<family>.<size>`` has local instance storage ([model-volume-kms], [ec2-store])."""
    parts = instance_type.split(".")
    family = parts[1] if len(parts) >= 3 and parts[0] == "ml" else ""
    return family in INSTANCE_STORE_FAMILIES or bool(_D_CAPABILITY.fullmatch(family))


def volume_kms_key_problem(instance_type: str, key: str) -> str | None:
    """Why SageMaker refuses ``ResourceConfig.VolumeKmsKeyId`` = ``key`` on ``instance_type`` (None: it does not).

    The rule is [model-volume-kms]'s; the wording of SageMaker's message is unconfirmed (no AWS
    source quotes it), so the message says what is wrong in the emulator's own words.
    """
    where = f"Value '{key}' at 'resourceConfig.volumeKmsKeyId' failed to satisfy constraint"
    if has_instance_storage(instance_type):
        return (
            f"{where}: {instance_type} has local instance storage, which a hardware module on the instance "
            "encrypts: a VolumeKmsKeyId cannot be requested for it (give the key in OutputDataConfig.KmsKeyId only)"
        )
    if not (_KMS_KEY_ID.fullmatch(key) or _KMS_KEY_ARN.fullmatch(key)):
        return f"{where}: Member must be a KMS key id or a KMS key ARN (an alias or an alias ARN is not accepted here)"
    return None
