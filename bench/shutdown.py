"""Measure what a Covalent server's shutdown does to a running BYOC electron and its job.

For each (signal, service) asked for: start the emulator (in this process) and a private Covalent
server, dispatch one electron that sleeps far longer than the measurement, wait until its job
runs, then stop the server as asked:

* ``SIGINT``: what ``covalent stop`` does (``covalent_dispatcher/_cli/service.py``
  ``_terminate_child_processes``: SIGINT to the uvicorn process, SIGKILL to its children, then
  wait for it with no timeout; here the wait is bounded by ``--wait``).
* ``SIGTERM``: ``kill PID``, systemd's and docker's stop, ``CovalentServer.stop()``.
* ``SIGKILL``: a crash.

It prints, counted from the signal: when the job API received the cancel (CancelJob /
StopTrainingJob, seen by an emulator request hook), when the job was CANCELLED/Stopped, when the
server process exited and with what status; then it starts a new server on the same directory
and port and prints the node's and the dispatch's status as Covalent recorded them, and the
server log's byoc-executor lines about the stop.

Usage: python bench/shutdown.py [--signal SIGINT SIGTERM] [--service sagemaker braket] [--keep] [--cancel-delay S]
No assertions: this prints the figures for the README ("When the Covalent server stops or dies").
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from byoc_executor.local.covalent_server import CovalentServer, isolate_client_config

_HOME = Path(tempfile.mkdtemp(prefix="byoc-bench-shutdown-"))
isolate_client_config(_HOME)  # before covalent is imported

import boto3  # noqa: E402
import cloudpickle  # noqa: E402
import covalent as ct  # noqa: E402
import psutil  # noqa: E402

from byoc_executor import BYOCExecutor  # noqa: E402
from byoc_executor.local import Emulator  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:bench"
ROLE = "arn:aws:iam::123456789012:role/bench"
BUCKET = "bench-shutdown"
CANCEL_OPERATIONS = {"CancelJob", "StopTrainingJob"}


def sleepy(seconds: float) -> str:
    import time as t

    t.sleep(seconds)
    return "slept"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def job_states(emulator: Emulator) -> dict[str, str]:
    return {j["name"]: j["status"] for j in emulator.jobs()}


def measure(sig: signal.Signals, service: str, on_server_exit: str, wait: float, cancel_delay: float = 0.0) -> None:
    emulator = Emulator(root=_HOME / f"emulator-{sig.name}-{service}", phase_delay=0.05, kill_grace=1.0).start()
    cancels: list[tuple[float, str]] = []

    def hook(call):
        if call.operation in CANCEL_OPERATIONS:
            cancels.append((time.monotonic(), call.operation))
            time.sleep(cancel_delay)  # a slow job API: the answer comes this much later
        return None

    emulator.request_hooks.append(hook)
    boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x",
                 aws_secret_access_key="y").create_bucket(Bucket=BUCKET)
    home = _HOME / f"server-{sig.name}-{service}"
    server = CovalentServer(home)
    try:
        server.start()
        ex = BYOCExecutor(service=service, image_uri=IMAGE, s3_bucket_name=BUCKET, role_arn=ROLE, endpoint_url=emulator.url,
                          device="local:braket/braket_sv", poll_freq=1, on_server_exit=on_server_exit)

        @ct.electron(executor=ex)
        def slow():
            return sleepy(300)

        @ct.lattice(executor="local", workflow_executor="local")
        def workflow():
            return slow()

        dispatch_id = server.dispatch(workflow)
        deadline = time.monotonic() + 90
        while "RUNNING" not in job_states(emulator).values() and "InProgress" not in job_states(emulator).values():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no job running: {emulator.jobs()}\n{server.log_tail()}")
            time.sleep(0.05)
        time.sleep(2.0)  # the follower is past its first status calls
        proc = server.proc
        assert proc is not None
        children = psutil.Process(proc.pid).children(recursive=True)
        seen: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            last: dict[str, str] = {}
            while not stop.is_set():
                for name, status in job_states(emulator).items():
                    if last.get(name) != status:
                        seen.setdefault(status, time.monotonic())
                        last[name] = status
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        if sig == signal.SIGINT:
            for child in children:  # as `covalent stop` does
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
        try:
            code = proc.wait(timeout=wait)
            exited = time.monotonic() - t0
        except Exception:
            code, exited = None, None
        time.sleep(3.0)  # a cancel that was sent takes the emulator kill_grace to end the job
        stop.set()
        watcher.join()
        print(f"\n== {sig.name} {service} on_server_exit={on_server_exit}" + (f", cancel answered {cancel_delay:g} s late" if cancel_delay else ""))
        print(f"server exited: {'no (still running after %.0f s)' % wait if exited is None else f'after {exited:.3f} s, status {code}'}")
        for at, operation in cancels:
            print(f"{operation} received at +{at - t0:.3f} s")
        if not cancels:
            print("no cancel request reached the job API")
        for status, at in sorted(seen.items(), key=lambda kv: kv[1]):
            print(f"job {status} at +{at - t0:.3f} s" if at >= t0 else f"job {status} before the signal")
        print(f"job now: {job_states(emulator)}")
        lines = [line for line in server.log_path.read_text(errors="replace").splitlines() if "job" in line and ("stop" in line or "cancel" in line)]
        print("server log:", *lines[-8:], sep="\n  ")
        server.stop()
        # What Covalent recorded: a new server on the same files and port (once the port is free).
        again = CovalentServer(home, port=server.port)
        deadline = time.monotonic() + 120
        while not _port_free(server.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        with again:
            import covalent as ct2

            result = ct2.get_result(dispatch_id, dispatcher_addr=again.url, wait=False)
            node = result.get_node_result(0)
            print(f"recorded: dispatch {result.status}, node {node['node_name']} {node['status']}")
    finally:
        server.stop()
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signal", nargs="+", default=["SIGINT", "SIGTERM"], choices=["SIGINT", "SIGTERM", "SIGKILL"])
    parser.add_argument("--service", nargs="+", default=["sagemaker", "braket"], choices=["sagemaker", "braket"])
    parser.add_argument("--keep", action="store_true", help="on_server_exit = keep")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server to exit")
    parser.add_argument("--cancel-delay", type=float, default=0.0, help="the emulator answers each cancel this many seconds late")
    args = parser.parse_args()
    for name in args.signal:
        for service in args.service:
            measure(signal.Signals[name], service, "keep" if args.keep else "cancel", args.wait, args.cancel_delay)


if __name__ == "__main__":
    main()
