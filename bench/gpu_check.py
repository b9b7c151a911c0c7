"""Run the GPU image's task on this machine's GPU: which device, and a matmul on the GPU against the CPU.

For a machine with an NVIDIA GPU and its driver (``nvidia-smi`` on PATH) and a container runtime
that can hand a container the GPU: docker with the NVIDIA Container Toolkit (``--gpus all``), or
podman with the toolkit's CDI specification (``nvidia-ctk cdi generate``; ``--device
nvidia.com/gpu=all``). buildah cannot: it does not inject GPU devices. The task runs as SageMaker
starts it: ``train`` in the image, with a signed payload laid out under a job tree mounted at the
same path, and its result is read back and verified as the executor reads it.

    python bench/gpu_check.py                                # the tests' GPU image (built if missing)
    python bench/gpu_check.py --image URI --tool docker      # an image you built or pulled
    python bench/gpu_check.py --size 8192 --repeats 10

Exit status: 0 the task ran on the GPU; 1 it failed or found no GPU inside the container; 2 nothing
was checked, because this machine has no GPU (no nvidia-smi), which the script says plainly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# torch 2.10's CUDA 12.8 runs on drivers from 525 on (CUDA minor-version compatibility).
MIN_DRIVER = 525


def matmul_timing(n: int = 4096, repeats: int = 5) -> dict:
    """Seconds per n x n float32 matmul on the CPU and, if one is visible, on the GPU.

    Each device does one product first (cuBLAS's handle, kernel selection) that is not timed; the
    GPU's timing synchronizes before reading the clock, since CUDA launches are asynchronous.
    """
    import time

    import torch

    def seconds_per_matmul(device: str) -> float:
        g = torch.Generator().manual_seed(0)
        a = torch.rand(n, n, generator=g).to(device)
        b = torch.rand(n, n, generator=g).to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        a @ b
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        return (time.perf_counter() - t0) / repeats

    report = {"torch": str(torch.__version__), "built_for_cuda": torch.version.cuda, "n": n, "gpu": None,
              "cpu_seconds": seconds_per_matmul("cpu"), "gpu_seconds": None}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
        report["gpu_seconds"] = seconds_per_matmul("cuda")
    print(json.dumps(report), flush=True)
    return report


def host_gpus() -> list[dict[str, str]] | None:
    """The GPUs nvidia-smi lists (name, driver), or None when there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nvidia-smi is there but failed ({done.returncode}): {done.stderr.strip()}")
    return [dict(zip(("name", "driver"), (p.strip() for p in line.split(",")))) for line in done.stdout.splitlines() if line.strip()]


def runtime(tool: str | None) -> str:
    """The container tool that can give a container the GPU: docker or podman whose info answers."""
    for candidate in [tool] if tool else ["docker", "podman"]:
        if shutil.which(candidate) and subprocess.run([candidate, "info"], capture_output=True).returncode == 0:
            return candidate
    raise SystemExit(f"no {tool or 'docker or podman'} that answers: buildah cannot pass a GPU to a container")


def run_job(tool: str, image: str, n: int, repeats: int) -> dict:
    """``train`` in ``image`` with the GPU, on a job tree that carries ``matmul_timing(n, repeats)``."""
    from covalent._workflow.transportable_object import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    from byoc_executor import codec
    from byoc_executor.container import byoc_entry as contract

    encoded = codec.encode_task(partial(wrapper_fn, TransportableObject(matmul_timing), [], []), [TransportableObject(n), TransportableObject(repeats)], {})
    with tempfile.TemporaryDirectory(prefix="byoc-gpu-check-") as scratch:
        tree = Path(scratch)
        env = {contract.ENV_ML_ROOT: str(tree / "opt" / "ml"), "HOME": str(tree / "home")}
        (tree / "home").mkdir()
        layout = contract.JobLayout(env)
        layout.payload_file.parent.mkdir(parents=True)
        layout.payload_file.write_bytes(encoded.envelope_bytes())
        layout.hp_file.parent.mkdir(parents=True, exist_ok=True)
        layout.hp_file.write_text(json.dumps(encoded.hyperparameters()))
        gpu = ["--gpus", "all"] if tool == "docker" else ["--device", "nvidia.com/gpu=all"]
        argv = [tool, "run", "--rm", *gpu, "-v", f"{tree}:{tree}"]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        done = subprocess.run([*argv, image, "train"], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the job failed in {image} ({done.returncode}):\n{done.stderr[-3000:]}")
        archive = tree / "results.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in layout.results_dir.iterdir():
                tar.add(path, arcname=path.name)
        outcome = codec.read_results_archive(str(archive), encoded.result_key)
    if not outcome.ok:
        raise SystemExit(f"the task raised: {outcome.exception}")
    return outcome.value.get_deserialized()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="the GPU job image (default: the tests' one, built by build_and_push.sh --gpu if missing)")
    parser.add_argument("--tool", choices=["docker", "podman"], help="the container runtime (default: the first that answers)")
    parser.add_argument("--size", type=int, default=4096, help="n of the n x n matmul (default 4096)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    gpus = host_gpus()
    if gpus is None:
        print("no GPU on this machine (nvidia-smi is not on PATH): nothing was checked. Run this on a machine "
              "with an NVIDIA GPU, its driver and docker (NVIDIA Container Toolkit) or podman (CDI).")
        return 2
    for gpu in gpus:
        major = int(gpu["driver"].split(".")[0]) if gpu["driver"].split(".")[0].isdigit() else 0
        note = "" if major >= MIN_DRIVER else f"  (older than {MIN_DRIVER}: the image's CUDA 12.8 torch will not start on it)"
        print(f"host GPU: {gpu['name']}, driver {gpu['driver']}{note}")
    tool = runtime(args.tool)
    image = args.image
    if image is None:
        from tests import container_support as cs

        cs.ensure_tools()
        image = cs.gpu_image(cs.base_image())
        if tool == "docker":  # buildah's storage is podman's, not docker's
            cs.run(["buildah", "push", image, f"docker-daemon:{image}"], timeout=3600)
    report = run_job(tool, image, args.size, args.repeats)
    print(f"image {image}: torch {report['torch']}, built for CUDA {report['built_for_cuda']}")
    if report["gpu"] is None:
        print(f"the task saw no GPU in the container; CPU: {report['cpu_seconds'] * 1e3:.1f} ms per {args.size}^2 matmul")
        return 1
    speedup = report["cpu_seconds"] / report["gpu_seconds"]
    print(f"device: {report['gpu']}")
    print(f"matmul {args.size}x{args.size} float32: GPU {report['gpu_seconds'] * 1e3:.2f} ms, CPU {report['cpu_seconds'] * 1e3:.1f} ms ({speedup:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
