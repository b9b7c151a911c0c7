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
"""

from __future__ import annotations

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
