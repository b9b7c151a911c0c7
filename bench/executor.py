"""Benchmark: what the executor costs next to the job, measured against the local emulator.

Prints, for N electrons of random lengths run concurrently through ``BYOCExecutor.execute()`` (the
entry Covalent's dispatcher uses, with Covalent's real task wrapper):

- client CPU seconds per electron (this process only: the emulator runs in its own process);
- the longest time the event loop was blocked: the longest callback in wall time and in the loop
  thread's CPU time (asyncio's slow-callback reporting, with the CPU share that tells our own work
  from waiting for a core or the GIL), and the longest pause of the garbage collector;
- completion latency: from the moment the emulator recorded the job as ended (its ``endedAt`` /
  ``TrainingEndTime``) to the moment ``execute()`` returned, median and p95;
- status calls (GetJob / DescribeTrainingJob) per job and per job-second.

The electrons belong to one dispatch, as a workflow's do (``--dispatch-per-electron``: each its own).

Usage: python bench/executor.py [--electrons 64] [--concurrency 64] [--service sagemaker] [--min 0.5] [--max 4] [--poll-freq 10]
No timed assertions anywhere: this prints figures for the README's performance table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from functools import partial

import boto3


def sleep_for(seconds: float) -> float:
    import time as t

    t.sleep(seconds)
    return seconds


def start_emulator() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "byoc_executor.cli", "local", "--port", "0", "--phase-delay", "0.05", "--kill-grace", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    line = proc.stdout.readline()
    return proc, line.rsplit(" ", 1)[-1].strip()


async def main(args: argparse.Namespace) -> None:
    import cloudpickle
    from covalent._workflow.transportable_object import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    from byoc_executor import BYOCExecutor, aws

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from covalent_listener import Listener

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    proc, url = start_emulator()
    try:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
        s3.create_bucket(Bucket="bench")
        ex_settings = dict(
            service=args.service,
            image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:bench",
            s3_bucket_name="bench",
            role_arn="arn:aws:iam::123456789012:role/bench",
            endpoint_url=url,
            device="local:braket/braket_sv",
            poll_freq=args.poll_freq,
        )
        status_calls: dict[str, int] = {}

        def count(params, **kwargs) -> None:
            # Braket job ARNs end in a UUID, not the job's name: count by ARN, resolve names below.
            key = params.get("jobArn") or params.get("TrainingJobName")
            status_calls[key] = status_calls.get(key, 0) + 1

        rng = random.Random(1)
        lengths = [rng.uniform(args.min, args.max) for _ in range(args.electrons)]
        returned: dict[str, float] = {}

        gate = asyncio.Semaphore(args.concurrency)
        dispatch = str(uuid.uuid4())  # the electrons of one workflow share its dispatch id

        async def one(i: int, seconds: float) -> None:
            async with gate:
                await electron(i, seconds)

        async def electron(i: int, seconds: float) -> None:
            ex = BYOCExecutor(**ex_settings)
            listener = Listener(ex)
            dispatch_id = str(uuid.uuid4()) if args.dispatch_per_electron else dispatch
            fn = partial(wrapper_fn, TransportableObject(sleep_for), [], [])
            _, _, stderr, status = await ex.execute(fn, [TransportableObject(seconds)], {}, dispatch_id, "/tmp", i)
            returned[listener.job_handles[0]["job_name"]] = time.time()
            await listener.close()
            assert str(status) == "COMPLETED", stderr

        # Register the counters on the shared clients before the electrons start.
        target = aws.AWSTarget.of(BYOCExecutor(**ex_settings).settings())
        client = await aws.pool().client(args.service, target)
        op = "GetJob" if args.service == "braket" else "DescribeTrainingJob"
        client.meta.events.register(f"provide-client-params.{args.service}.{op}", count)
        requests: dict[str, int] = {}

        def count_request(model, **kwargs) -> None:
            requests[model.name] = requests.get(model.name, 0) + 1

        for name in (args.service, "s3", "logs"):
            (await aws.pool().client(name, target)).meta.events.register("before-call", count_request)

        # asyncio's slow-callback reporting, in numbers: every callback's wall time, and the CPU
        # time the loop's thread spent in it. A callback that took long in wall time but little CPU
        # was waiting: for the GIL (worker threads) or for a core (the job processes share two).
        callbacks: list[tuple[float, float, str]] = []
        real_run = asyncio.events.Handle._run

        def timed_run(handle) -> None:
            w0, c0 = time.perf_counter(), time.thread_time()
            real_run(handle)
            wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
            if wall > 0.005:
                callbacks.append((wall, cpu, describe(handle)))

        def describe(handle) -> str:
            """The callback, and for a task's step the coroutine and where it stopped after it."""
            task = getattr(getattr(handle, "_callback", None), "__self__", None)
            if not isinstance(task, asyncio.Task):
                return repr(handle)[:160]
            coro, where = task.get_coro(), "(finished)"
            while getattr(coro, "cr_frame", None) is not None:  # down to the innermost awaiting coroutine
                code = coro.cr_frame.f_code
                where = f"{code.co_filename.rsplit('/', 2)[-2:]} {code.co_name}:{coro.cr_frame.f_lineno}"
                coro = getattr(coro, "cr_await", None)
            return f"step of task {task.get_name()} ({task.get_coro().__qualname__}), then waiting in {where}"

        asyncio.events.Handle._run = timed_run
        # The garbage collector's full passes run inside whatever callback allocates at the time.
        gc_pauses: list[tuple[float, int]] = []
        gc_started = [0.0]

        def gc_timer(phase: str, info: dict) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                gc_pauses.append((time.perf_counter() - gc_started[0], info["generation"]))

        gc.callbacks.append(gc_timer)
        cpu0, wall0, loop_cpu0 = time.process_time(), time.perf_counter(), time.thread_time()
        await asyncio.gather(*(one(i, s) for i, s in enumerate(lengths)))
        cpu, wall, loop_cpu = time.process_time() - cpu0, time.perf_counter() - wall0, time.thread_time() - loop_cpu0
        asyncio.events.Handle._run = real_run
        gc.callbacks.remove(gc_timer)
        await asyncio.sleep(0)  # end this (timed) step here: what follows is the bench's own reading

        sync = boto3.client(args.service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
        latencies, per_second, job_seconds = [], [], []
        with urllib.request.urlopen(f"{url}/_byoc/jobs") as answer:  # the emulator's admin surface
            arns = {j["name"]: j["arn"] for j in json.load(answer)}
        for name, back in returned.items():
            if args.service == "braket":
                job = sync.get_job(jobArn=arns[name])
                ended, started = job["endedAt"].timestamp(), job["createdAt"].timestamp()
            else:
                job = sync.describe_training_job(TrainingJobName=name)
                ended, started = job["TrainingEndTime"].timestamp(), job["CreationTime"].timestamp()
            latencies.append(back - ended)
            job_seconds.append(ended - started)
            calls = status_calls.get(arns[name] if args.service == "braket" else name, 0)
            per_second.append(calls / max(ended - started, 1e-3))
        await aws.close_clients()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    latencies.sort()
    print(f"electrons: {args.electrons} on {args.service} ({args.concurrency} at a time), job lengths {args.min}-{args.max} s, poll_freq {args.poll_freq} s")
    print(f"wall time: {wall:.1f} s")
    print(f"client CPU per electron: {1000 * cpu / args.electrons:.1f} ms ({1000 * loop_cpu / args.electrons:.1f} ms in the event loop's thread, the rest in worker threads)")
    worst_wall = max(callbacks, default=(0.0, 0.0, ""))
    worst_cpu = max(callbacks, key=lambda c: c[1], default=(0.0, 0.0, ""))
    print(f"longest callback: {1000 * worst_wall[0]:.1f} ms wall ({1000 * worst_wall[1]:.1f} ms of it CPU in the loop's thread)")
    print(f"longest callback by CPU in the loop's thread: {1000 * worst_cpu[1]:.1f} ms ({1000 * worst_cpu[0]:.1f} ms wall): {worst_cpu[2]}")
    worst_gc = max(gc_pauses, default=(0.0, 0))
    print(f"longest garbage-collector pause: {1000 * worst_gc[0]:.1f} ms (generation {worst_gc[1]}; {sum(1 for g in gc_pauses if g[1] == 2)} full collections)")
    slow = [c for c in callbacks if c[0] > 0.02]
    print(f"callbacks over 20 ms wall: {len(slow)}, of which over 20 ms CPU: {sum(1 for c in slow if c[1] > 0.02)}")
    print(f"completion latency: median {statistics.median(latencies):.2f} s, p95 {latencies[int(0.95 * (len(latencies) - 1))]:.2f} s")
    total = sum(requests.values())
    print(f"API requests per electron: {total / args.electrons:.1f} (" + ", ".join(f"{k} {v / args.electrons:.1f}" for k, v in sorted(requests.items(), key=lambda kv: -kv[1])) + ")")
    print(f"API requests per job-second: {total / sum(job_seconds):.2f} (jobs lasted {statistics.mean(job_seconds):.1f} s on average, creation to end)")
    calls = [status_calls.get(n, 0) for n in returned]
    print(f"status calls per job: mean {statistics.mean(calls):.1f}; per job-second: mean {statistics.mean(per_second):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--electrons", type=int, default=64)
    parser.add_argument("--service", choices=["braket", "sagemaker"], default="sagemaker")
    parser.add_argument("--min", type=float, default=0.5)
    parser.add_argument("--max", type=float, default=4.0)
    parser.add_argument("--poll-freq", type=float, default=10.0)
    parser.add_argument(
        "--concurrency", type=int, default=64,
        help="electrons in flight at once. Each local job is a Python process importing covalent: on a "
        "2-core machine many at once starve this process of CPU, which then shows as loop stalls",
    )
    parser.add_argument(
        "--dispatch-per-electron", action="store_true",
        help="give every electron a dispatch of its own (no two jobs share a results listing)",
    )
    args = parser.parse_args()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    for name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_EC2_METADATA_DISABLED"]:
        del os.environ[name]
    asyncio.run(main(args))
