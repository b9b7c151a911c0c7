"""The GPU job image (container/Dockerfile.gpu), built as a user builds it and run for real.

The image is built by ``build_and_push.sh --gpu --builder buildah --no-push`` on the container
tests' Debian base (see tests/container_support.py: cached by its inputs, one kept), matching this
client's versions. Then electrons run in it through the emulator in container mode
(:class:`~byoc_executor.local.container_launcher.ContainerLauncher`), on both services: a task
that imports torch and reports the CUDA release torch was built for, the GPU architectures it has
kernels for and whether a GPU is visible, computing on the CPU when none is (as here); and the
examples' GPU electron, which must say which device it ran on.

A cold build downloads about 3 GB and takes 6 to 10 minutes here; the image is 7.7 GB. So the
first build happens only when asked (``make test-gpu-image``, i.e. ``BYOC_BUILD_GPU_IMAGE=1``).
Once a GPU image has been built on the machine, the cache is warm: ``make test`` then runs these
tests, rebuilding what changed (a new entry script: seconds, buildah reuses the PyTorch layer).
On a machine that never built one they are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS

from byoc_executor.local import Emulator
from byoc_executor.local.container_launcher import ContainerLauncher
from byoc_executor.local.pytest_plugin import emulator_client
from tests import container_support as cs
from tests.conftest import BUCKET
from tests.test_executor_emulator import execute, executor

sys.path.insert(0, str(cs.REPO / "examples"))
import gpu  # noqa: E402  (examples/gpu.py: the quickstart's GPU electron)
from bench import gpu_check  # noqa: E402

pytestmark = pytest.mark.timeout(3600)

# The tasks below live in modules the image does not have: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(gpu)
cloudpickle.register_pickle_by_value(gpu_check)

BUILD_ENV = "BYOC_BUILD_GPU_IMAGE"
# PyTorch's CUDA line: 12 runs on drivers from 525 on; 13 would need 580 (see README, "The GPU image").
CUDA_MAJOR = "12"
# Compute capabilities of the SageMaker GPU instance families, each of which needs kernels for its
# own (or a lower minor of the same major): V100 (p3), T4 (g4dn), A100 (p4d), A10G (g5), L4 and
# L40S (g6, g6e: sm_89 runs sm_86 kernels), H100/H200 (p5), B200 (p6-b200).
# A GPU instance type each service accepts (Braket's list has no ml.g5).
GPU_INSTANCE = {"sagemaker": "ml.g5.xlarge", "braket": "ml.g4dn.xlarge"}
INSTANCE_ARCHS = {"ml.p3": "sm_70", "ml.g4dn": "sm_75", "ml.p4d": "sm_80", "ml.g5": "sm_86", "ml.p5": "sm_90", "ml.p6-b200": "sm_100"}


def cuda_report(n: int) -> dict:
    """What the GPU image's torch is, and a matrix product on the GPU if one is visible, else the CPU."""
    import torch

    visible = torch.cuda.is_available()
    device = torch.device("cuda" if visible else "cpu")
    a = torch.ones(n, n, device=device)
    print(f"torch {torch.__version__} built for CUDA {torch.version.cuda}; computing on {device}")
    return {
        # str(): torch.__version__ is a TorchVersion, which a client without torch cannot unpickle.
        "torch": str(torch.__version__),
        "built_for_cuda": torch.version.cuda,
        # get_arch_list() is empty without a GPU; the build's flags are not.
        "archs": torch._C._cuda_getArchFlags().split(),
        "gpu_visible": visible,
        "device_count": torch.cuda.device_count(),
        "device": str(device),
        "sum": float((a @ a).sum().item()),
    }


@pytest.fixture(scope="module")
def gpu_image() -> str:
    """The GPU image: built if asked (``BYOC_BUILD_GPU_IMAGE=1``) or if one was built here before."""
    hint = "`make test-gpu-image` builds it (about 3 GB of downloads, 6 to 10 minutes, 7.7 GB on disk); `make test` then runs these tests"
    if shutil.which("buildah") is None and os.environ.get(BUILD_ENV) != "1":
        pytest.skip(f"no GPU image was built on this machine (buildah is not even installed): {hint}")
    try:
        cs.ensure_tools()
        warm = cs.image_exists(cs.base_image_name()) and cs.gpu_images_built()
        if os.environ.get(BUILD_ENV) != "1" and not warm:
            pytest.skip(f"no GPU image was built on this machine: {hint}")
        return cs.gpu_image(cs.base_image())
    except cs.ContainerSetupError as e:
        pytest.fail(f"cannot build the GPU image with build_and_push.sh and buildah: {e}", pytrace=False)


@pytest.fixture(scope="module")
def gpu_emulator(gpu_image: str, tmp_path_factory: pytest.TempPathFactory):
    """An emulator whose jobs run in the GPU image (buildah), with the tests' bucket."""
    emulator = Emulator(
        root=tmp_path_factory.mktemp("gpu-jobs"), launcher=ContainerLauncher(gpu_image, tool="buildah"), phase_delay=0.05, kill_grace=2.0
    )
    emulator.start()
    emulator_client(emulator, "s3").create_bucket(Bucket=BUCKET)
    try:
        yield emulator
    finally:
        emulator.stop()


def host_has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


@pytest.mark.container
@pytest.mark.gpu_image
def test_gpu_image_is_the_one_keyed_by_its_inputs_and_labelled(gpu_image: str) -> None:
    info = json.loads(cs.run(["buildah", "inspect", "--type", "image", gpu_image]).stdout)
    labels = info["OCIv1"]["config"]["Labels"]
    versions = cs.build_args("")
    assert labels["io.byoc-executor.cloudpickle"] == versions["CLOUDPICKLE_VERSION"]
    assert labels["io.byoc-executor.covalent"] == versions["COVALENT_VERSION"]
    assert labels["io.byoc-executor.torch"].startswith("torch==")
    env = dict(e.split("=", 1) for e in info["OCIv1"]["config"]["Env"])
    # What the NVIDIA container runtime reads to mount the driver and GPUs into a job's container.
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and "compute" in env["NVIDIA_DRIVER_CAPABILITIES"]
    # One GPU image is kept: the others were removed when this one was built.
    names = cs.gpu_images_built()
    assert gpu_image in names and all(cs._inspect(n)["FromImageID"] == info["FromImageID"] for n in names), names


@pytest.mark.container
@pytest.mark.gpu_image
@pytest.mark.parametrize("service", ["sagemaker", "braket"])
async def test_electron_in_the_gpu_image_reports_torch_and_its_device(gpu_emulator: Emulator, service: str) -> None:
    ex = executor(gpu_emulator, service, instance_type=GPU_INSTANCE[service], max_runtime=600)
    value, stdout, stderr, status, _ = await execute(ex, cuda_report, 64)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value["built_for_cuda"].split(".")[0] == CUDA_MAJOR, value
    missing = {kind: arch for kind, arch in INSTANCE_ARCHS.items() if arch not in value["archs"]}
    assert not missing, f"no kernels for {missing} in {value['archs']}"
    if not host_has_gpu():
        assert value["gpu_visible"] is False and value["device_count"] == 0
    assert value["device"] == ("cuda" if value["gpu_visible"] else "cpu")
    assert value["sum"] == 64.0**3
    assert f"built for CUDA {value['built_for_cuda']}; computing on {value['device']}" in stdout
    assert "Failed to initialize NumPy" not in stderr  # NumPy is in the image


@pytest.mark.container
@pytest.mark.gpu_image
async def test_examples_gpu_electron_says_which_device_it_ran_on(gpu_emulator: Emulator) -> None:
    value, stdout, stderr, status, _ = await execute(executor(gpu_emulator, "sagemaker", instance_type="ml.g5.xlarge"), gpu.matmul_checksum, 128)
    assert status == RESULT_STATUS.COMPLETED, stderr
    if host_has_gpu() and value["device"].startswith("cuda"):
        assert stdout.startswith("using GPU ")
    else:
        assert value["device"] == "cpu (PyTorch)"  # torch is there, the GPU is not: torch on the CPU
        assert "no GPU: no CUDA device is visible to PyTorch" in stdout and f"built for CUDA {CUDA_MAJOR}." in stdout
    assert value["checksum"] > 0


@pytest.mark.container
@pytest.mark.gpu_image
async def test_gpu_checks_task_times_the_cpu_where_no_gpu_is_visible(gpu_emulator: Emulator) -> None:
    """bench/gpu_check.py's task, through the image: here only its CPU half can run."""
    value, stdout, stderr, status, _ = await execute(executor(gpu_emulator, "sagemaker", instance_type="ml.g5.xlarge"), gpu_check.matmul_timing, 128, 2)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value["cpu_seconds"] > 0 and value["built_for_cuda"].split(".")[0] == CUDA_MAJOR
    if not host_has_gpu():
        assert value["gpu"] is None and value["gpu_seconds"] is None
    assert json.loads(stdout.strip().splitlines()[-1]) == value


def test_gpu_check_says_plainly_when_there_is_no_gpu() -> None:
    if host_has_gpu():
        pytest.skip("this machine has a GPU: run bench/gpu_check.py to check it for real")
    done = subprocess.run([sys.executable, str(cs.REPO / "bench" / "gpu_check.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout.startswith("no GPU on this machine (nvidia-smi is not on PATH): nothing was checked.")
