"""The SageMaker Python SDK v2, which nobody here wrote, against the emulator over HTTP.

The SDK (``sagemaker<3``) does not resolve beside this project's pins, so it gets its own venv,
``.venv-sagemaker-v2`` under the repository (made once, then reused), and each test runs it in
a subprocess with telemetry off (its ``TelemetryOptOut`` setting, ``SageMaker.PythonSDK.Modules``,
from a config file named by ``SAGEMAKER_USER_CONFIG_OVERRIDE``; the admin config is pointed at an
empty file too). The job attached to is a byoc job made in this process; the SDK sees only the
training-job API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from byoc_executor.local import Emulator
from tests.emulator_helpers import client, greet, sagemaker_request, unique, upload_payload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-sagemaker-v2"
BUCKET = "outside-sagemaker"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
CONFIG = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


@pytest.fixture(scope="session")
def sagemaker_v2() -> Path:
    """The Python of a venv with the SageMaker SDK v2 (made on first use; takes a few minutes)."""
    python = VENV / "bin" / "python"
    ready = VENV / ".byoc-ready"
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "sagemaker<3"], capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.skip(f"the SageMaker SDK v2 could not be installed: {done.stderr[-2000:]}")
        ready.write_text("sagemaker<3\n")
    return python


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with Emulator(root=tmp_path_factory.mktemp("outside-sagemaker"), phase_delay=0.2, kill_grace=1.0) as em:
        client(em.url, "s3").create_bucket(Bucket=BUCKET)
        yield em


def run_sdk(python: Path, emulator: Emulator, tmp_path: Path, code: str, timeout: float = 300) -> dict:
    """Run ``code`` (ending with one JSON line on stdout) with the SageMaker SDK v2 in its own venv."""
    (tmp_path / "client.py").write_text(textwrap.dedent(code))
    (tmp_path / "sagemaker-config.yaml").write_text(CONFIG)
    (tmp_path / "admin-config.yaml").write_text("SchemaVersion: '1.0'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({
        "AWS_ENDPOINT_URL": emulator.url, "AWS_ACCESS_KEY_ID": "outside", "AWS_SECRET_ACCESS_KEY": "outside",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path),
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(tmp_path / "sagemaker-config.yaml"),
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(tmp_path / "admin-config.yaml"),
    })
    done = subprocess.run([str(python), str(tmp_path / "client.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return {"out": json.loads(done.stdout.strip().splitlines()[-1]), "stdout": done.stdout, "stderr": done.stderr}


def start_byoc_job(emulator: Emulator) -> str:
    s3, sagemaker = client(emulator.url, "s3"), client(emulator.url, "sagemaker")
    name, prefix = unique("sm-outside"), unique("prefix")
    hp = upload_payload(s3, BUCKET, prefix, greet, 4)
    sagemaker.create_training_job(**sagemaker_request(name, BUCKET, prefix, hp))
    return name


def test_estimator_attach_to_a_byoc_job_waits_for_it(sagemaker_v2, emulator, tmp_path):
    name = start_byoc_job(emulator)
    answer = run_sdk(sagemaker_v2, emulator, tmp_path, f'''
        import json, boto3
        from sagemaker import Session
        from sagemaker.estimator import Estimator
        session = Session(boto_session=boto3.Session(region_name="us-east-1"))
        estimator = Estimator.attach({name!r}, sagemaker_session=session)
        job = session.describe_training_job({name!r})
        print(json.dumps({{"model_data": estimator.model_data, "instance_type": estimator.instance_type,
                          "instance_count": estimator.instance_count, "output_kms_key": estimator.output_kms_key,
                          "status": job["TrainingJobStatus"], "image": estimator.image_uri}}))
    ''')
    out = answer["out"]
    assert out["status"] == "Completed"
    assert out["model_data"].endswith(f"/{name}/output/model.tar.gz")
    assert (out["instance_type"], out["instance_count"], out["output_kms_key"]) == ("ml.m5.large", 1, "")


def test_the_sdks_waiter_and_not_found(sagemaker_v2, emulator, tmp_path):
    name = start_byoc_job(emulator)
    out = run_sdk(sagemaker_v2, emulator, tmp_path, f'''
        import json, boto3
        from botocore.exceptions import ClientError
        from sagemaker import Session
        session = Session(boto_session=boto3.Session(region_name="us-east-1"))
        final = session.wait_for_job({name!r}, poll=1)
        try:
            session.describe_training_job("no-such-job-here")
            missing = None
        except ClientError as e:
            missing = e.response["Error"]
        boto = boto3.client("sagemaker", region_name="us-east-1")
        boto.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName={name!r}, WaiterConfig={{"Delay": 1}})
        print(json.dumps({{"status": final["TrainingJobStatus"], "missing": missing}}))
    ''')["out"]
    assert out["status"] == "Completed"
    assert out["missing"] == {"Code": "ValidationException", "Message": "Requested resource not found."}


# --- Estimator.fit in container mode, on an image that follows SageMaker's training contract ---------

TRAIN = r'''#!/usr/bin/env python3
"""SageMaker's training contract, as the sagemaker-training-toolkit documents it: channels in
/opt/ml/input/data/<channel>, string hyperparameters in /opt/ml/input/config/hyperparameters.json,
the model written to /opt/ml/model (tarred to the output path by the service), and on failure a
message in /opt/ml/output/failure and a non-zero exit."""
import json, os, sys
hp = json.load(open("/opt/ml/input/config/hyperparameters.json"))
if hp.get("fail") == "yes":
    open("/opt/ml/output/failure", "w").write("the algorithm refused: fail=yes")
    sys.exit(3)
channels = {c: sorted(os.listdir(os.path.join("/opt/ml/input/data", c))) for c in os.listdir("/opt/ml/input/data")}
print("training with", json.dumps(hp, sort_keys=True), "on", json.dumps(channels, sort_keys=True), flush=True)
json.dump({"hp": hp, "channels": channels, "job": os.environ.get("TRAINING_JOB_NAME"), "argv": sys.argv[1:]},
          open("/opt/ml/model/model.json", "w"))
'''
TRAIN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/outside-train:1"


@pytest.fixture(scope="module")
def train_image(tmp_path_factory) -> str:
    """A small image whose ``train`` (on PATH) follows SageMaker's contract, tagged as an ECR URI."""
    from tests import container_support as cs

    try:
        cs.ensure_tools()
        base = cs.base_image()
    except cs.ContainerSetupError as e:
        pytest.fail(f"cannot build the training image with buildah: {e}", pytrace=False)
    context = tmp_path_factory.mktemp("train-image")
    (context / "train").write_text(TRAIN)
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY train /usr/local/bin/train\nRUN chmod 755 /usr/local/bin/train\n")
    cs.run(["buildah", "bud", "--isolation", "chroot", "--network", "host", "-t", TRAIN_IMAGE, str(context)], timeout=900)
    return TRAIN_IMAGE


@pytest.fixture(scope="module")
def container_emulator(train_image, tmp_path_factory):
    from byoc_executor.local.container_launcher import ContainerLauncher

    launcher = ContainerLauncher("localhost/no-byoc-image:none", tool="buildah")
    with Emulator(root=tmp_path_factory.mktemp("outside-fit"), launcher=launcher, phase_delay=0.2, kill_grace=1.0) as em:
        s3 = client(em.url, "s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="data/train/a.csv", Body=b"1,2\n")
        s3.put_object(Bucket=BUCKET, Key="data/train/b.csv", Body=b"3,4\n")
        yield em


@pytest.mark.container
def test_estimator_fit_runs_the_jobs_own_image_with_logs(sagemaker_v2, container_emulator, tmp_path):
    out = run_sdk(sagemaker_v2, container_emulator, tmp_path, f'''
        import io, json, tarfile, boto3
        from sagemaker import Session
        from sagemaker.estimator import Estimator
        session = Session(boto_session=boto3.Session(region_name="us-east-1"))
        estimator = Estimator(image_uri={TRAIN_IMAGE!r}, role={ROLE!r}, instance_count=1, instance_type="ml.m5.large",
                              output_path="s3://{BUCKET}/out", sagemaker_session=session, hyperparameters={{"epochs": 3}})
        estimator.fit({{"train": "s3://{BUCKET}/data/train/"}}, logs=True)
        bucket, key = estimator.model_data[len("s3://"):].split("/", 1)
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        model = json.load(tarfile.open(fileobj=io.BytesIO(body)).extractfile("model.json"))
        failing = Estimator(image_uri={TRAIN_IMAGE!r}, role={ROLE!r}, instance_count=1, instance_type="ml.m5.large",
                            output_path="s3://{BUCKET}/out", sagemaker_session=session, hyperparameters={{"fail": "yes"}})
        try:
            failing.fit(logs=False)
            reason = None
        except Exception as e:
            reason = session.describe_training_job(failing.latest_training_job.name)["FailureReason"]
        print(json.dumps({{"model": model, "job": estimator.latest_training_job.name, "reason": reason}}))
    ''', timeout=600)
    result = out["out"]
    model = result["model"]
    assert model["hp"]["epochs"] == "3"  # hyperparameters arrive as strings (the SDK JSON-encodes them)
    # No ENTRYPOINT: `train` itself is the command (as `docker run IMAGE train`), so it gets no arguments.
    assert model["channels"] == {"train": ["a.csv", "b.csv"]} and model["argv"] == []
    assert model["job"] == result["job"]
    assert "training with" in out["stdout"]  # the SDK streamed the job's CloudWatch log
    assert result["reason"] == "AlgorithmError: the algorithm refused: fail=yes, exit code: 3"
