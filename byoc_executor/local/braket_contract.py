"""What Amazon Braket gives a hybrid job's container, stated from AWS's own sources.

The emulator's reading of the Braket job contract. It is written from AWS's code and models and
imports nothing of the client's (``byoc_executor.container.byoc_entry``, ``settings``): the two
readings are held against each other by ``tests/test_contract.py``, which says where they differ.

Sources (each fact below names the one it comes from):

- [containers] amazon-braket-containers ``src/braket_container.py``: the AWS-provided job
  containers' start-up script. It links ``/opt/braket`` to ``/opt/ml`` (``create_symlink``), reads
  the script location from ``AMZN_BRAKET_SCRIPT_S3_URI``/``_ENTRY_POINT``/``_COMPRESSION_TYPE``,
  downloads it to ``/opt/braket/code/customer_code/original``, unpacks gzip/zip archives into
  ``.../extracted``, puts that on ``sys.path``, imports ``module:function`` or runs the module as
  ``__main__`` (``runpy.run_module``), binds hyperparameters to the function's parameters when
  they fit, runs it in a child process, writes ``<ExceptionType>: <message>`` to
  ``/opt/ml/output/failure`` when it raises, and exits with the child's exit code.
- [sdk-local] Braket SDK ``braket/jobs/local/local_job_container_setup.py`` (amazon-braket-sdk
  1.88): the environment its local mode gives the same containers: ``AMZN_BRAKET_JOB_RESULTS_DIR
  =/opt/braket/model``, ``AMZN_BRAKET_HP_FILE=/opt/braket/input/config/hyperparameters.json`` (only
  when the job has hyperparameters), ``AMZN_BRAKET_INPUT_DIR=/opt/braket/input/data`` (only when it
  has input data), ``AMZN_BRAKET_CHECKPOINT_DIR=<checkpointConfig.localPath>``,
  ``AMZN_BRAKET_OUT_S3_BUCKET``, ``AMZN_BRAKET_TASK_RESULTS_S3_URI=s3://<bucket>/jobs/<job>/tasks``,
  ``AMZN_BRAKET_JOB_RESULTS_S3_PATH=<prefix>/<job>/output``; and the files it writes under
  ``/opt/ml`` (``input/config/hyperparameters.json``, ``input/data/<channel>``, ``model``). It
  reads ``checkpointConfig["localPath"]`` unconditionally: the SDK always sends a
  ``checkpointConfig`` (``braket/jobs/config.py`` ``CheckpointConfig``, localPath
  ``/opt/jobs/checkpoints``), so neither it nor the AWS containers (which never mention
  checkpoints) say what a job created without one is given.
- [sdk-env] Braket SDK ``braket/jobs/environment_variables.py``: what job code reads
  (``AMZN_BRAKET_JOB_NAME``, ``_DEVICE_ARN``, ``_INPUT_DIR``, ``_JOB_RESULTS_DIR``,
  ``_CHECKPOINT_DIR``, ``_HP_FILE``); ``braket/aws/aws_session.py`` reads ``AMZN_BRAKET_JOB_TOKEN``
  and passes it as ``jobToken`` to CreateQuantumTask. ``get_checkpoint_dir()`` falls back to the
  working directory when ``AMZN_BRAKET_CHECKPOINT_DIR`` is unset.
- [sdk-job] Braket SDK ``braket/aws/aws_quantum_job.py``: ``LOG_GROUP = "/aws/braket/jobs"``;
  ``_logs_prefix``: "jobs ARNs used to contain the job name ... now job ARNs use a UUID and a log
  prefix of ``job-name/UUID``"; ``queue_position()`` reads ``queueInfo.position`` and takes the
  string ``"None"`` for no position, and its docstring says a position over 15 reads ``">15"``
  (the SDK passes the string on unchanged, so the service sends it); results are
  ``<s3Path>/output/model.tar.gz``.
- [model] botocore ``braket/2019-09-01/service-2.json``: ``GetJobResponse.failureReason`` is a
  ``String1024``; ``HybridJobQueueInfo`` (``queue``, ``position``, ``message``), ``QueueName``
  (``QUANTUM_TASKS_QUEUE``, ``JOBS_QUEUE``); ``JobArn`` pattern ``arn:aws[a-z\\-]*:braket:...:job/.*``;
  ``S3Path`` pattern ``(https|s3)://([^/]+)/?(.*)``; ``JobCheckpointConfig.localPath``: "The
  default directory is /opt/braket/checkpoints/" (the SDK sends ``/opt/jobs/checkpoints`` itself).
- [quotas] Amazon Braket developer guide, "Amazon Braket quotas": at most 5 instances for one
  hybrid job (the model states only ``min: 1``).
- [images] Braket SDK ``braket/jobs/image_uri_config/*.json``: the AWS-provided job images live in
  registry ``292282985366``, repositories ``amazon-braket-base-jobs``,
  ``amazon-braket-pytorch-jobs``, ``amazon-braket-tensorflow-jobs``.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from byoc_executor.local.s3_uris import split_s3_uri

# --- the layout ([containers], [sdk-local]) ----------------------------------------------------------
OPT_ML = PurePosixPath("/opt/ml")
"""Where the service writes the job's files (hyperparameters, input data) and reads its results."""
OPT_BRAKET = PurePosixPath("/opt/braket")
"""Where ``AMZN_BRAKET_*`` point; absent until the container links it to :data:`OPT_ML`."""
RESULTS_SUBDIR = "model"
"""``/opt/braket/model``: tarred to ``<s3Path>/output/model.tar.gz`` when the job ends."""
HP_FILE_SUBPATH = "input/config/hyperparameters.json"
INPUT_DATA_SUBDIR = "input/data"
FAILURE_FILE_SUBPATH = "output/failure"
"""``/opt/ml/output/failure``: its text becomes ``failureReason`` ([containers] ``ERROR_LOG_FILE``)."""
CUSTOMER_CODE_SUBDIR = "code/customer_code"
"""Under ``/opt/braket``: ``original/`` (the download) and ``extracted/`` (unpacked, on sys.path)."""

# --- the environment ([sdk-local], [sdk-env]) --------------------------------------------------------
ENV_JOB_NAME = "AMZN_BRAKET_JOB_NAME"
ENV_DEVICE_ARN = "AMZN_BRAKET_DEVICE_ARN"
ENV_SCRIPT_S3_URI = "AMZN_BRAKET_SCRIPT_S3_URI"
ENV_SCRIPT_ENTRY_POINT = "AMZN_BRAKET_SCRIPT_ENTRY_POINT"
ENV_SCRIPT_COMPRESSION_TYPE = "AMZN_BRAKET_SCRIPT_COMPRESSION_TYPE"
ENV_JOB_RESULTS_DIR = "AMZN_BRAKET_JOB_RESULTS_DIR"
ENV_CHECKPOINT_DIR = "AMZN_BRAKET_CHECKPOINT_DIR"
ENV_HP_FILE = "AMZN_BRAKET_HP_FILE"
ENV_INPUT_DIR = "AMZN_BRAKET_INPUT_DIR"
ENV_OUT_S3_BUCKET = "AMZN_BRAKET_OUT_S3_BUCKET"
ENV_TASK_RESULTS_S3_URI = "AMZN_BRAKET_TASK_RESULTS_S3_URI"
ENV_JOB_RESULTS_S3_PATH = "AMZN_BRAKET_JOB_RESULTS_S3_PATH"
ENV_JOB_TOKEN = "AMZN_BRAKET_JOB_TOKEN"
ENVIRONMENT = (
    ENV_JOB_NAME, ENV_DEVICE_ARN, ENV_SCRIPT_S3_URI, ENV_SCRIPT_ENTRY_POINT, ENV_SCRIPT_COMPRESSION_TYPE,
    ENV_JOB_RESULTS_DIR, ENV_CHECKPOINT_DIR, ENV_HP_FILE, ENV_INPUT_DIR, ENV_OUT_S3_BUCKET,
    ENV_TASK_RESULTS_S3_URI, ENV_JOB_RESULTS_S3_PATH, ENV_JOB_TOKEN,
)
"""Every ``AMZN_BRAKET_*`` variable a job's container may be given (the script ones only in
script mode, the checkpoint one only with a ``checkpointConfig``: :func:`container_environment`)."""

DEFAULT_CHECKPOINT_PATH = "/opt/braket/checkpoints"
"""[model] ``JobCheckpointConfig.localPath``'s documented default."""

# --- names the service gives ([sdk-job], [model]) ----------------------------------------------------
LOG_GROUP = "/aws/braket/jobs"
FAILURE_REASON_LIMIT = 1024
"""``failureReason`` is a ``String1024`` in the model."""
MAX_INSTANCES = 5
"""[quotas]: instances per hybrid job; the exact refusal message is unconfirmed."""
JOBS_QUEUE = "JOBS_QUEUE"
NO_POSITION = "None"
"""What ``queueInfo.position`` holds once a job is no longer queued ([sdk-job] compares to it)."""
POSITION_SHOWN_UP_TO = 15
"""Past this, ``queueInfo.position`` reads ``">15"`` ([sdk-job] ``queue_position`` docstring)."""
AWS_JOB_IMAGE_REGISTRY = "292282985366"
AWS_JOB_IMAGE_REPOSITORIES = ("amazon-braket-base-jobs", "amazon-braket-pytorch-jobs", "amazon-braket-tensorflow-jobs")


def job_arn(region: str, account: str, job_id: str | None = None) -> str:
    """``arn:aws:braket:<region>:<account>:job/<uuid>``: today's ARNs end in a UUID ([sdk-job])."""
    return f"arn:aws:braket:{region}:{account}:job/{job_id or uuid.uuid4()}"


def log_stream_prefix(job_name: str, arn: str) -> str:
    """``<jobName>/<uuid>`` for a UUID ARN, ``<jobName>`` for an old name ARN ([sdk-job] ``_logs_prefix``)."""
    last = arn.rsplit("/", 1)[-1]
    return job_name if last == job_name else f"{job_name}/{last}"


def queue_info(status: str, position: int = 1) -> dict[str, str]:
    """GetJob's ``queueInfo`` when asked with ``additionalAttributeNames=["QueueInfo"]``.

    The model's ``HybridJobQueueInfo`` requires ``queue`` (``QueueName``: ``JOBS_QUEUE`` for a
    hybrid job) and ``position`` (a string), ``message`` being optional. While the job is QUEUED,
    ``position`` is its 1-based place in its device's queue, ``">15"`` past 15 ([sdk-job]
    ``queue_position`` docstring: ``HybridJobQueueInfo(queue_position='2', message=None)``, and
    ``'>15'`` for 18). Once it is not QUEUED, ``position`` is ``"None"`` with a ``message``
    ([sdk-job]: "Job is in COMPLETED status. AmazonBraket does not show queue position for this
    status."). Unconfirmed: whether AWS sends a ``message`` with a position (none here, as in the
    SDK's example), and that the ``>15`` cap is applied by the service rather than described.

    Args:
        status: the job's ``JobPrimaryStatus``.
        position: its rank among its device's QUEUED jobs (1: the next to leave).
    """
    if status == "QUEUED":
        shown = str(position) if position <= POSITION_SHOWN_UP_TO else f">{POSITION_SHOWN_UP_TO}"
        return {"queue": JOBS_QUEUE, "position": shown}
    return {
        "queue": JOBS_QUEUE,
        "position": NO_POSITION,
        "message": f"Job is in {status} status. AmazonBraket does not show queue position for this status.",
    }


def is_aws_job_image(uri: str | None) -> bool:
    """Whether ``uri`` is one of the AWS-provided Braket job images ([images]); None is the default one."""
    if not uri:
        return True
    registry, _, rest = uri.partition(".")
    repository = rest.split("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return registry == AWS_JOB_IMAGE_REGISTRY and repository in AWS_JOB_IMAGE_REPOSITORIES


def container_environment(
    *,
    job_name: str,
    device: str,
    braket_root: str,
    checkpoint_dir: str | None,
    output_s3_path: str,
    job_token: str,
    script_mode: dict | None,
) -> dict[str, str]:
    """The ``AMZN_BRAKET_*`` environment of a job's container ([sdk-local], [sdk-env]).

    Args:
        job_name: ``jobName``.
        device: ``deviceConfig.device``.
        braket_root: where ``/opt/braket`` is for this host (it need not exist yet).
        checkpoint_dir: the host path of ``checkpointConfig.localPath`` (its default when the
            config has none); None for a job without a ``checkpointConfig``.
        output_s3_path: ``outputDataConfig.s3Path``.
        job_token: the job's token, for ``jobToken`` on CreateQuantumTask.
        script_mode: ``algorithmSpecification.scriptModeConfig``, if any.

    ``AMZN_BRAKET_HP_FILE`` and ``AMZN_BRAKET_INPUT_DIR`` are always set here; the SDK's local
    mode sets them only when the job has hyperparameters or input data. What the service does
    for a job without either is unconfirmed; setting them (to a file or directory that may not
    exist) is what the SDK's readers tolerate: ``get_hyperparameters`` opens the file only if the
    variable is set, so the emulator always writes the file.

    ``AMZN_BRAKET_CHECKPOINT_DIR`` is set only for a job with a ``checkpointConfig``: [sdk-local]
    sets it from ``checkpointConfig.localPath`` and [model] documents that path's default, but no
    source says what a job without a ``checkpointConfig`` is given (unconfirmed). Leaving it unset
    fails safe: a directory that nothing syncs to S3 would lose what a task saved there, while
    [sdk-env]'s reader falls back to the working directory and byoc-executor's entry script then
    offers the task no checkpoint directory at all.
    """
    bucket, prefix = split_s3_uri(output_s3_path)
    root = PurePosixPath(braket_root)
    env = {
        ENV_JOB_NAME: job_name,
        ENV_DEVICE_ARN: device,
        ENV_JOB_RESULTS_DIR: str(root / RESULTS_SUBDIR),
        ENV_HP_FILE: str(root / HP_FILE_SUBPATH),
        ENV_INPUT_DIR: str(root / INPUT_DATA_SUBDIR),
        ENV_OUT_S3_BUCKET: bucket,
        ENV_TASK_RESULTS_S3_URI: f"s3://{bucket}/jobs/{job_name}/tasks",
        # The SDK's local mode appends the job name to the prefix it parsed from s3Path; its
        # AwsQuantumJob.create puts the job name in s3Path already, so the service's value is
        # "<prefix>/output" (unconfirmed beyond the SDK's own uses of it).
        ENV_JOB_RESULTS_S3_PATH: f"{prefix}/output".lstrip("/"),
        ENV_JOB_TOKEN: job_token,
    }
    if checkpoint_dir is not None:
        env[ENV_CHECKPOINT_DIR] = checkpoint_dir
    if script_mode:
        env[ENV_SCRIPT_S3_URI] = script_mode["s3Uri"]
        env[ENV_SCRIPT_ENTRY_POINT] = script_mode["entryPoint"]
        # The model documents no default; AWS's container treats an absent type as uncompressed.
        if script_mode.get("compressionType"):
            env[ENV_SCRIPT_COMPRESSION_TYPE] = script_mode["compressionType"]
    return env

