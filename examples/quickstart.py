"""Quickstart: a Covalent workflow whose electrons run as Braket hybrid jobs and SageMaker training jobs.

With no argument it runs in local mode, with no AWS account: it starts the byoc-executor emulator
(the Braket and SageMaker job APIs on 127.0.0.1, with moto for S3 and CloudWatch Logs) and a private
Covalent server, and dispatches a workflow with a quantum electron on Braket, a GPU-or-CPU electron
on SageMaker, and plain arithmetic on both. Everything it started is stopped when it ends. Local
mode keeps every file under ./.byoc-local/ (--home): the Covalent client's configuration and caches
as well as the server's, so your own ~/.config/covalent and ~/.cache/covalent are never read or
written. --dispatcher URL uses a Covalent server you run instead (it needs byoc-executor installed).

    python examples/quickstart.py                      # local mode
    python examples/quickstart.py --aws \\
        --bucket B --role-arn-braket R1 --role-arn-sagemaker R2 --image-uri URI --region us-east-1

With --aws the same workflow runs on AWS itself: the executors get no endpoint override, and
nothing else changes. (That costs money: a few ml.m5.large minutes and one ml.g5.xlarge job.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cloudpickle

import gpu
import quantum

# Covalent is imported inside the functions below, never at the top: `import covalent` reads its
# configuration (and writes it back) once, so local mode must first point it at its own directory.

# The electrons below come from modules that exist only on this machine: ship them by value, so
# the job (which has only the image's packages) can unpickle them.
cloudpickle.register_pickle_by_value(quantum)
cloudpickle.register_pickle_by_value(gpu)

LOCAL_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:local"
LOCAL_ROLE = "arn:aws:iam::123456789012:role/byoc-executor-local"
LOCAL_BUCKET = "byoc-quickstart"


def build_workflow(braket, sagemaker):
    import covalent as ct

    @ct.electron(executor=sagemaker)
    def add(a: int, b: int) -> int:
        print(f"SageMaker training job adding {a} + {b}")
        return a + b

    @ct.electron(executor=braket)
    def square(x: int) -> int:
        print(f"Braket hybrid job squaring {x}")
        return x * x

    bell = ct.electron(quantum.bell_counts, executor=braket)
    matmul = ct.electron(gpu.matmul_checksum, executor=sagemaker)

    # workflow_executor="local": the lattice's own post-processing runs in the Covalent server,
    # which need not have a Dask cluster.
    @ct.lattice(executor="local", workflow_executor="local")
    def workflow(a: int, b: int) -> dict:
        total = add(a, b)
        return {"square_of_sum": square(total), "bell_counts": bell(shots=1000), "matmul": matmul(256)}

    return workflow


def wait_for(dispatch_id: str, dispatcher_url: str, results_dir: Path, timeout: float):
    """The dispatch's result once it has ended (``get_result(wait=True)`` would wait forever)."""
    import covalent as ct

    deadline = time.monotonic() + timeout
    while True:
        status = str(ct.get_result(dispatch_id, dispatcher_addr=dispatcher_url, status_only=True)["status"])
        if status in ("COMPLETED", "FAILED", "CANCELLED"):
            return ct.get_result(dispatch_id, dispatcher_addr=dispatcher_url, results_dir=str(results_dir))
        if time.monotonic() > deadline:
            raise TimeoutError(f"dispatch {dispatch_id} is still {status} after {timeout:.0f}s; cancel it with ct.cancel")
        time.sleep(0.5)


def run(braket, sagemaker, dispatcher_url: str, results_dir: Path, timeout: float = 900) -> int:
    import covalent as ct

    workflow = build_workflow(braket, sagemaker)
    started = time.monotonic()
    dispatch_id = ct.dispatch(workflow, dispatcher_addr=dispatcher_url)(3, 4)
    print(f"dispatched {dispatch_id} to {dispatcher_url}; waiting for the jobs...")
    result = wait_for(dispatch_id, dispatcher_url, results_dir, timeout)
    print(f"\nworkflow {result.status} in {time.monotonic() - started:.1f}s")
    if str(result.status) != "COMPLETED":
        print(f"error: {result.error}", file=sys.stderr)
        for i in range(len(result.lattice.transport_graph._graph.nodes)):
            node = result.get_node_result(i)
            if str(node["status"]) != "COMPLETED":
                print(f"node {i} {node['node_name']}: {node['status']}\n{node.get('stderr') or ''}{node.get('error') or ''}", file=sys.stderr)
        return 1
    print("what the jobs printed:")
    for i in sorted(result.lattice.transport_graph._graph.nodes):
        node = result.get_node_result(i)
        for line in (node.get("stdout") or "").splitlines():
            print(f"  [{node['node_name']}] {line}")
    print("results:")
    for key, value in result.result.items():
        print(f"  {key}: {value}")
    return 0


def local_mode(home: Path, dispatcher: str | None = None) -> int:
    """Run the workflow against the emulator, with a private Covalent server unless ``dispatcher``."""
    from byoc_executor.local.covalent_server import CovalentServer, isolate_client_config

    home.mkdir(parents=True, exist_ok=True)
    # Before anything imports covalent: the client's config, logs and caches go under home/client.
    isolate_client_config(home)

    import boto3

    from byoc_executor import BYOCExecutor
    from byoc_executor.local import Emulator

    with Emulator(root=home / "emulator") as emulator:
        print(f"emulator: {emulator.url} (Braket and SageMaker job APIs; S3 and Logs by moto)")
        s3 = boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
        s3.create_bucket(Bucket=LOCAL_BUCKET)
        server = None
        if dispatcher is None:
            server = CovalentServer(home / "covalent").start()
            dispatcher = server.url
            print(f"covalent: started a private server at {server.address}")
        else:
            print(f"covalent: using the server at {dispatcher}")
        try:
            common = dict(image_uri=LOCAL_IMAGE, s3_bucket_name=LOCAL_BUCKET, endpoint_url=emulator.url, poll_freq=2)
            braket = BYOCExecutor(service="braket", role_arn=LOCAL_ROLE, device="local:braket/braket_sv", **common)
            sagemaker = BYOCExecutor(service="sagemaker", role_arn=LOCAL_ROLE, instance_type="ml.g5.xlarge", **common)
            return run(braket, sagemaker, dispatcher, home / "results")
        finally:
            if server is not None:
                server.stop()


def aws_mode(args: argparse.Namespace) -> int:
    from byoc_executor import BYOCExecutor

    common = dict(image_uri=args.image_uri, s3_bucket_name=args.bucket, region=args.region)
    braket = BYOCExecutor(service="braket", role_arn=args.role_arn_braket, device=args.device, **common)
    sagemaker = BYOCExecutor(service="sagemaker", role_arn=args.role_arn_sagemaker, instance_type="ml.g5.xlarge", **common)
    from covalent._shared_files.config import get_config

    url = f"http://{get_config('dispatcher.address')}:{get_config('dispatcher.port')}"
    return run(braket, sagemaker, url, Path(".byoc-local") / "results")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path(".byoc-local"), help="where local mode keeps its files")
    parser.add_argument("--aws", action="store_true", help="run on AWS instead of the local emulator")
    parser.add_argument(
        "--dispatcher", metavar="URL", help="local mode: the Covalent server to use, e.g. http://127.0.0.1:48008 (default: start a private one)"
    )
    parser.add_argument("--bucket")
    parser.add_argument("--image-uri")
    parser.add_argument("--role-arn-braket")
    parser.add_argument("--role-arn-sagemaker")
    parser.add_argument("--region", default="")
    parser.add_argument("--device", default="arn:aws:braket:::device/quantum-simulator/amazon/sv1")
    args = parser.parse_args()
    if args.aws:
        missing = [n for n in ("bucket", "image_uri", "role_arn_braket", "role_arn_sagemaker") if not getattr(args, n)]
        if missing:
            parser.error("--aws needs " + ", ".join("--" + m.replace("_", "-") for m in missing))
        return aws_mode(args)
    return local_mode(args.home.resolve(), args.dispatcher)


if __name__ == "__main__":
    sys.exit(main())
