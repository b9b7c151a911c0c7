"""Measure the job image: its size and its cold start. Prints the figures; asserts nothing.

    python bench/image.py                       # the lean image (EXTRAS="") and the default one
    python bench/image.py --variants lean --runs 10
    python bench/image.py --variants lean,default,pennylane,gpu

Each CPU variant is container/Dockerfile built with buildah on the local Debian base that the
container tests use (tests/container_support.py; cached), matching this client's versions; ``gpu``
is container/Dockerfile.gpu built by ``build_and_push.sh --gpu`` on the same base (the image
tests/test_gpu_image.py runs; about 3 GB to download when it is not built yet).
Cold start is measured over ``--runs`` fresh working containers (a new ``buildah from`` each):

- ``launch -> first line``: from starting ``buildah run ... -- train`` to the task's first line on
  stdout: buildah's chroot setup, the ``train`` shim, the interpreter, ``import covalent``,
  verifying the payload, unpickling, calling the task (what a job adds on top of the
  service's own provisioning and image pull);
- ``launch -> bare python``: the same for ``python -c "print(...)"``: buildah's overhead plus the
  interpreter's start; the difference is the entry script's own share. (In-container clocks such
  as psutil's process create time are not trustworthy under a sandboxed kernel: none is used.)
- for ``gpu`` also ``launch -> after import torch``: the same job with a task that imports torch
  before its first line, what every GPU task pays (on the CPU here: no CUDA initialisation).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cloudpickle  # noqa: E402
from covalent._workflow.transportable_object import TransportableObject  # noqa: E402
from covalent.executor.utils.wrappers import wrapper_fn  # noqa: E402

from byoc_executor import codec  # noqa: E402
from tests import container_support as cs  # noqa: E402

VARIANTS = {"lean": "", "default": "amazon-braket-sdk", "pennylane": "amazon-braket-sdk amazon-braket-pennylane-plugin pennylane", "gpu": None}

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def first_line() -> str:
    print("FIRST", flush=True)
    return "ok"


def first_line_after_torch() -> str:
    import torch

    print("FIRST", torch.__version__, flush=True)
    return "ok"


def lay_out(tree: Path, task=first_line) -> dict[str, str]:
    from byoc_executor.container import byoc_entry as contract

    encoded = codec.encode_task(partial(wrapper_fn, TransportableObject(task), [], []), [], {})
    ml = tree / "opt" / "ml"
    env = {contract.ENV_ML_ROOT: str(ml), "HOME": str(tree / "home")}
    (tree / "home").mkdir(parents=True)
    layout = contract.JobLayout(env)
    layout.payload_file.parent.mkdir(parents=True)
    layout.payload_file.write_bytes(encoded.envelope_bytes())
    layout.hp_file.parent.mkdir(parents=True, exist_ok=True)
    import json

    layout.hp_file.write_text(json.dumps(encoded.hyperparameters()))
    return env


def time_to_first_line(image: str, command: list[str], job: bool, task=first_line) -> float:
    """Seconds from launching ``command`` in a fresh container to its first "FIRST" line."""
    container = cs.Container.of(image)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            tree = Path(scratch)
            env = lay_out(tree, task) if job else {}
            argv = ["buildah", "run", "--isolation", "chroot", "--network", "host", "-v", f"{tree}:{tree}"]
            for k, v in env.items():
                argv += ["--env", f"{k}={v}"]
            t0 = time.monotonic()
            proc = subprocess.Popen([*argv, container.name, "--", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            seconds = float("nan")
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith("FIRST") and seconds != seconds:
                    seconds = time.monotonic() - t0
            proc.wait()
            if proc.returncode != 0:
                raise RuntimeError(f"{command} failed in the image: {proc.stderr.read()}")  # type: ignore[union-attr]
            return seconds
    finally:
        container.remove()


def describe(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="lean,default", help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cs.ensure_tools()
    base = cs.base_image()
    print(f"base image {base}: {cs.image_size(base) / 1e6:.0f} MB (Debian bookworm minbase + python3.11)")
    for variant in args.variants.split(","):
        t0 = time.monotonic()
        image = cs.gpu_image(base) if variant == "gpu" else cs.build_image(base, extras=VARIANTS[variant])
        built = time.monotonic() - t0
        size = cs.image_size(image)
        what = "Dockerfile.gpu (its defaults)" if variant == "gpu" else f"EXTRAS={VARIANTS[variant]!r}"
        print(f"\n[{variant}] {what}  image {image}")
        print(f"  size:                      {size / 1e6:.0f} MB ({(size - cs.image_size(base)) / 1e6:.0f} MB above the base)")
        print(f"  compressed (as pushed):    {cs.compressed_size(image) / 1e6:.0f} MB")
        print(f"  build (or cache hit):      {built:.1f} s")
        starts = [time_to_first_line(image, ["train"], job=True) for _ in range(args.runs)]
        idle = [time_to_first_line(image, ["python", "-c", "print('FIRST', flush=True)"], job=False) for _ in range(args.runs)]
        print(f"  launch -> task's 1st line: {describe(starts)}")
        print(f"  launch -> bare python:     {describe(idle)}")
        print(f"  entry script's own share:  about {statistics.median(starts) - statistics.median(idle):.2f} s (imports, verify, unpickle)")
        if variant == "gpu":
            torch_starts = [time_to_first_line(image, ["train"], job=True, task=first_line_after_torch) for _ in range(args.runs)]
            print(f"  launch -> after import torch: {describe(torch_starts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
