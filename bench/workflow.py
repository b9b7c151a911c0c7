"""Benchmark: a workflow through a real Covalent server, BYOC on the emulator next to Covalent's "local".

Starts the emulator (``byoc-executor local``, its own process) and a private Covalent server (its
own process group, files under a temporary directory), then runs, in one go:

1. Concurrency: one dispatch of N independent electrons that each sleep S seconds, once with
   ``BYOCExecutor(service="sagemaker")`` pointed at the emulator and once with ``executor="local"``.
   Prints both wall times (client: dispatch to result in hand) and their ratio, then where each
   electron's time went: Covalent's node start/end times, the job timeline the emulator reports
   (DescribeTrainingJob: CreationTime, SecondaryStatusTransitions, TrainingEndTime) and the task's
   own ``time.time()`` at its start and end, with the job process's creation time (/proc).
2. One trivial electron (``x + 1``) in a chain of R, sequential, on each executor: the ratio per
   electron, and the breakdown of an emulator electron (client upload and submit, emulated phases,
   process start and imports, result upload, polling) next to Covalent's own overhead.

Every clock is this machine's ``time.time()`` (job process, emulator, Covalent server, this
script), so the differences are comparable; none is finer than about 10 ms, none needs to be.
CPU seconds are read with psutil: the job processes are the emulator's reaped children.

Usage: python bench/workflow.py [--electrons 64] [--seconds 2] [--repeats 5] [--phase-delay 0.1] [--poll-freq 10] [--keep]
Smoke run: python bench/workflow.py --electrons 8 --repeats 2
No timed assertions anywhere: this prints figures for the README's performance section.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cloudpickle

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:bench"
ROLE = "arn:aws:iam::123456789012:role/bench"
BUCKET = "bench-workflow"
DUMMY_KEYS = {"region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
RESULT_TIMEOUT = 900.0
CORES = os.cpu_count() or 1


# --- the electrons (shipped by value: jobs cannot import this script) ------------------------------


def process_age() -> float | None:
    """Seconds since this process was created, from /proc (Linux; None elsewhere).

    Read against the same clock as ``/proc/uptime``, so it is good to the kernel's 10 ms tick;
    psutil's ``create_time()`` adds the boot time, which /proc/stat gives in whole seconds only
    (up to 1 s off ``time.time()``).
    """
    import os

    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except OSError:
        return None
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks


def nap(seconds: float) -> dict:
    """Sleep; report when the task itself started and ended, in which process, created when."""
    import os
    import time

    started = time.time()
    time.sleep(seconds)
    ended = time.time()
    age = process_age()
    return {"start": started, "end": ended, "pid": os.getpid(), "process_created": None if age is None else time.time() - age}


def inc(previous: Any) -> dict:
    """``x + 1`` (``previous`` is a number or the previous ``inc``'s result), with its timestamps."""
    import os
    import time

    started = time.time()
    x = previous["value"] if isinstance(previous, dict) else previous
    value = x + 1
    ended = time.time()
    age = process_age()
    return {"value": value, "start": started, "end": ended, "pid": os.getpid(),
            "process_created": None if age is None else time.time() - age}


# --- what one electron's run looked like -----------------------------------------------------------


@dataclass
class Run:
    """One electron: Covalent's node times, the task's own times, and the job's timeline (BYOC only)."""

    node_id: int
    node_start: float
    node_end: float
    task_start: float
    task_end: float
    pid: int
    process_created: float | None
    job: dict[str, float] | None = None


@dataclass
class Dispatch:
    """One dispatch: client wall times, Covalent's dispatch times, its electrons, CPU used."""

    label: str
    dispatch_id: str
    submitted: float  # client: just before ct.dispatch
    terminal_seen: float  # client: first status poll that saw COMPLETED
    result_in_hand: float  # client: ct.get_result returned (assets downloaded)
    covalent_start: float
    covalent_end: float
    runs: list[Run]
    cpu: dict[str, float]

    @property
    def wall(self) -> float:
        return self.result_in_hand - self.submitted


def epoch(value: datetime) -> float:
    """Seconds since the epoch; Covalent hands back naive datetimes that are UTC."""
    return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value).timestamp()


def job_timeline(sagemaker: Any, name: str) -> dict[str, float]:
    """The emulator's record of one training job, as epoch seconds per milestone."""
    job = sagemaker.describe_training_job(TrainingJobName=name)
    marks = {t["Status"]: t["StartTime"].timestamp() for t in job["SecondaryStatusTransitions"]}
    if job["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"job {name} is {job['TrainingJobStatus']}: {job.get('FailureReason')}")
    return {
        "created": job["CreationTime"].timestamp(),
        "downloading": marks["Downloading"],  # == TrainingStartTime
        "training": marks["Training"],  # the emulator is about to start the job's process
        "uploading": marks["Uploading"],  # the process has exited (and its logs are flushed)
        "ended": job["TrainingEndTime"].timestamp(),
    }


# --- processes we start, and their CPU ---------------------------------------------------------------


class EmulatorProcess:
    """``python -m byoc_executor.cli local`` in its own session; stopped by :meth:`stop`."""

    def __init__(self, home: Path, phase_delay: float, extra_args: tuple[str, ...] = ()):
        """``extra_args``: more ``byoc-executor local`` options (e.g. ``--profile aws --time-scale 60``)."""
        self.log_path = home / "emulator.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "byoc_executor.cli", "local", "--port", "0", "--root", str(home / "jobs"),
                 "--phase-delay", str(phase_delay), "--kill-grace", "1", *extra_args],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
            )
        line = self.proc.stdout.readline()
        if not line.strip():
            self.stop()
            raise RuntimeError(f"the emulator did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: it kills running jobs and exits
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()


def reference_startup(home: Path, runs: int = 3) -> dict[str, float]:
    """Median seconds for a bare interpreter and one that imports covalent, one at a time.

    Run before anything else is started, with an environment like a job's (only PATH and LANG;
    a private HOME, where ``import covalent`` writes its config as it does in a job's tree).
    """
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": str(home / "reference-home")}
    figures = {}
    for label, code in (("bare", "pass"), ("covalent", "import cloudpickle, covalent")):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True, stdin=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        figures[label] = statistics.median(times)
    return figures


def cpu_seconds(emulator_pid: int, server_pid: int) -> dict[str, float]:
    """CPU seconds so far of: job processes (reaped), the emulator itself, the Covalent server, us."""
    import psutil

    emulator = psutil.Process(emulator_pid).cpu_times()
    server = psutil.Process(server_pid)
    times = server.cpu_times()
    covalent = times.user + times.system + times.children_user + times.children_system
    for child in server.children(recursive=True):  # LocalExecutor's pool workers live until the end
        try:
            t = child.cpu_times()
            covalent += t.user + t.system
        except psutil.NoSuchProcess:
            pass  # exited: counted in children_* once reaped
    return {
        "jobs": emulator.children_user + emulator.children_system,
        "emulator": emulator.user + emulator.system,
        "covalent": covalent,
        "bench": time.process_time(),
    }


# --- running a dispatch --------------------------------------------------------------------------------


def run_dispatch(label: str, server: Any, workflow: Callable, args: tuple, task_name: str,
                 cpu: Callable[[], dict[str, float]], sagemaker: Any | None) -> Dispatch:
    """Dispatch, wait, and collect every ``task_name`` node's times (and its job's, for BYOC)."""
    from byoc_executor.services import job_name

    before = cpu()
    submitted = time.time()
    dispatch_id = server.dispatch(workflow, *args)
    deadline = time.monotonic() + RESULT_TIMEOUT
    while (status := server.status(dispatch_id)) not in ("COMPLETED", "FAILED", "CANCELLED"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: dispatch {dispatch_id} still {status} after {RESULT_TIMEOUT:.0f} s")
        time.sleep(0.05)
    terminal_seen = time.time()
    result = server.result(dispatch_id, timeout=60)
    result_in_hand = time.time()
    after = cpu()
    nodes = [result.get_node_result(i) for i in sorted(result.lattice.transport_graph._graph.nodes)]
    if status != "COMPLETED":
        for node in nodes:
            if str(node["status"]) != "COMPLETED":
                print(f"{label}: node {node['node_id']} {node['node_name']} {node['status']}:\n"
                      f"{node.get('error') or ''}{(node.get('stderr') or '')[-2000:]}", file=sys.stderr)
                break
        raise RuntimeError(f"{label}: dispatch {dispatch_id} ended {status}: {result.error}")
    runs = []
    for node in nodes:
        if node["node_name"] != task_name:
            continue
        out = node["output"]
        out = out.get_deserialized() if hasattr(out, "get_deserialized") else out
        runs.append(Run(
            node_id=node["node_id"], node_start=epoch(node["start_time"]), node_end=epoch(node["end_time"]),
            task_start=out["start"], task_end=out["end"], pid=out["pid"], process_created=out["process_created"],
            job=job_timeline(sagemaker, job_name(dispatch_id, node["node_id"])) if sagemaker is not None else None,
        ))
    return Dispatch(
        label=label, dispatch_id=dispatch_id, submitted=submitted, terminal_seen=terminal_seen,
        result_in_hand=result_in_hand, covalent_start=epoch(result.start_time), covalent_end=epoch(result.end_time),
        runs=sorted(runs, key=lambda r: r.node_start), cpu={k: after[k] - before[k] for k in after},
    )


# --- printing --------------------------------------------------------------------------------------------

WIDTH = 70


def row(label: str, values: list[float], *notes: str) -> None:
    """One line: mean, median and max of ``values`` (seconds), then notes on what the figure includes."""
    if values:
        figures = f"{statistics.mean(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}"
    else:
        figures = "    (no data)"
    print(f"  {label:<{WIDTH}}{figures}")
    for note in notes:
        print(f"        {note}")


def header(title: str) -> None:
    print(f"  {title:<{WIDTH}}{'mean':>7} {'median':>7} {'max':>7}  (s)")


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else 0.0


def most_at_once(runs: list[Run]) -> int:
    """The largest number of tasks whose own start..end overlapped."""
    events = sorted([(r.task_start, 1) for r in runs] + [(r.task_end, -1) for r in runs])
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def print_cpu(d: Dispatch) -> None:
    c = d.cpu
    jobs = f"job processes {c['jobs']:5.1f} ({c['jobs'] / len(d.runs):.2f} per job), " if c["jobs"] > 0.05 else ""
    print(f"  CPU s during the {d.label} dispatch: {jobs}emulator {c['emulator']:4.1f}, Covalent server + its pool "
          f"{c['covalent']:4.1f}, this script {c['bench']:4.1f} ({CORES} cores x {d.wall:.1f} s = {CORES * d.wall:.1f} available)")


def print_byoc_breakdown(runs: list[Run], phase_delay: float) -> None:
    """Where an emulator electron's node time went, from Covalent's, the emulator's and the task's clocks."""
    pairs = [(r, r.job) for r in runs]
    known = [(r, x) for r, x in pairs if r.process_created is not None]
    header("one BYOC electron, node start to node end")
    row("a.  node start -> job created", [x["created"] - r.node_start for r, x in pairs],
        "executor: settings check, pickle + sign the task, S3 upload, CreateTrainingJob")
    row("b1. job created -> Downloading", [x["downloading"] - x["created"] for _, x in pairs],
        f"emulated queue + provisioning: 2 x phase_delay ({phase_delay:g} s) of sleep")
    row("b2. Downloading -> Training", [x["training"] - x["downloading"] for _, x in pairs],
        "the emulator copies the payload from S3, + 1 x phase_delay")
    row("c.  Training -> task starts: process start + imports", [r.task_start - x["training"] for r, x in pairs])
    row("c1.   Training -> job process created", [r.process_created - x["training"] for r, x in known],
        "emulator: CloudWatch Logs client and stream, Popen")
    row("c2.   job process created -> task starts", [r.task_start - r.process_created for r, _ in known],
        "interpreter start, byoc_entry's imports, payload signature check, cloudpickle.loads",
        "(which imports covalent: Covalent's wrapper is part of the task)")
    row("d.  the task itself", [r.task_end - r.task_start for r in runs])
    row("e.  task ends -> job ended: job end after task end", [x["ended"] - r.task_end for r, x in pairs])
    row("e1.   task ends -> Uploading", [x["uploading"] - r.task_end for r, x in pairs],
        "result pickled + written, process exits, its log lines shipped to moto's CloudWatch")
    row("e2.   Uploading -> job ended", [x["ended"] - x["uploading"] for _, x in pairs],
        "1 x phase_delay + the emulator tars the results to S3")
    row("f.  job ended -> node end", [r.node_end - x["ended"] for r, x in pairs],
        "executor notices (status poll / S3 probe), downloads + verifies the result,",
        "deletes the task's S3 objects; Covalent records the node")
    row("    node duration (a..f)", [r.node_end - r.node_start for r in runs])
    row("    job duration, CreationTime -> TrainingEndTime (b..e)", [x["ended"] - x["created"] for _, x in pairs])
    row("    emulator's share: job duration - task (b + c + e)", [(x["ended"] - x["created"]) - (r.task_end - r.task_start) for r, x in pairs])
    row("    executor's own share: node duration - job duration (a + f)", [(r.node_end - r.node_start) - (x["ended"] - x["created"]) for r, x in pairs])


def print_local_breakdown(runs: list[Run]) -> None:
    header("one local electron, node start to node end")
    row("node start -> task starts", [r.task_start - r.node_start for r in runs],
        "waiting for a free worker of the server's process pool, then the hand-over")
    row("the task itself", [r.task_end - r.task_start for r in runs])
    row("task ends -> node end", [r.node_end - r.task_end for r in runs], "result back from the worker; Covalent records the node")
    row("node duration", [r.node_end - r.node_start for r in runs])


def print_wall_decomposition(byoc: Dispatch, local: Dispatch) -> None:
    """wall = dispatch -> first task start + spread of starts + last task's run + last task end -> result."""
    print(f"  {'the wall time, cut at the tasks own timestamps':<{WIDTH}}{'BYOC':>7} {'local':>7}  (s)")
    parts = [
        ("dispatch -> first task starts", lambda d: min(r.task_start for r in d.runs) - d.submitted),
        ("first task starts -> last task starts", lambda d: max(r.task_start for r in d.runs) - min(r.task_start for r in d.runs)),
        ("last task starts -> last task ends", lambda d: max(r.task_end for r in d.runs) - max(r.task_start for r in d.runs)),
        ("last task ends -> result in hand", lambda d: d.result_in_hand - max(r.task_end for r in d.runs)),
        ("= wall time", lambda d: d.wall),
    ]
    for label, part in parts:
        print(f"  {label:<{WIDTH}}{part(byoc):7.2f} {part(local):7.2f}")


def print_covalent_overhead(d: Dispatch) -> None:
    runs = d.runs
    gaps = [b.node_start - a.node_end for a, b in itertools.pairwise(runs)]
    print(f"  Covalent's own time around the {d.label} chain")
    print(f"  {'  client: dispatch -> Covalent starts the dispatch (build, upload)':<{WIDTH}}{d.covalent_start - d.submitted:7.2f}")
    print(f"  {'  dispatch starts -> first node starts':<{WIDTH}}{runs[0].node_start - d.covalent_start:7.2f}")
    if gaps:
        row("  node ends -> next node starts (mean/median/max)", gaps)
    print(f"  {'  last node ends -> dispatch ends (post-processing)':<{WIDTH}}{d.covalent_end - max(r.node_end for r in runs):7.2f}")
    print(f"  {'  dispatch ends -> client sees COMPLETED (polled every 50 ms)':<{WIDTH}}{d.terminal_seen - d.covalent_end:7.2f}")
    print(f"  {'  client: COMPLETED -> result in hand (ct.get_result, downloads)':<{WIDTH}}{d.result_in_hand - d.terminal_seen:7.2f}")


def report_concurrency(byoc: Dispatch, local: Dispatch, args: argparse.Namespace) -> None:
    n, s = args.electrons, args.seconds
    workers = len({r.pid for r in local.runs})
    print(f"\n== 1. Concurrency: one dispatch of {n} independent electrons, each sleeps {s:g} s ==")
    print(f"  wall time, dispatch -> result in hand: BYOC on the emulator {byoc.wall:.1f} s, Covalent local "
          f"{local.wall:.1f} s, ratio BYOC / local {byoc.wall / local.wall:.2f}")
    print(f"  (Covalent's own dispatch start -> end: BYOC {byoc.covalent_end - byoc.covalent_start:.1f} s, "
          f"local {local.covalent_end - local.covalent_start:.1f} s)")
    print(f"  most tasks sleeping at once: BYOC {most_at_once(byoc.runs)}, local {most_at_once(local.runs)}. Local ran in "
          f"{workers} worker processes (LocalExecutor's ProcessPoolExecutor(), os.cpu_count() = {os.cpu_count()}):")
    print(f"  at least ceil({n} / {workers}) x {s:g} s = {math.ceil(n / max(workers, 1)) * s:.0f} s of sleeping in turn")
    print_cpu(byoc)
    print_cpu(local)
    print(f"  the job processes' CPU alone, spread over {CORES} cores: {byoc.cpu['jobs'] / CORES:.1f} s (no run of these {n} jobs "
          "can take less wall time on this machine)")
    print()
    print_wall_decomposition(byoc, local)
    # (label, the moment, whether it means anything for local: its "process" is a pool worker)
    points = [
        ("Covalent starts the node (node start_time)", lambda r: r.node_start, True),
        ("the emulator creates the job (CreationTime)", lambda r: r.job["created"] if r.job else None, False),
        ("the job's process is created", lambda r: r.process_created, False),
        ("the task starts", lambda r: r.task_start, True),
    ]
    print()
    print(f"  {'first -> last electron to reach each point':<{WIDTH}}{'BYOC':>7} {'local':>7}  (s)")
    for label, when, for_local in points:
        cells = []
        for d, meaningful in ((byoc, True), (local, for_local)):
            times = [t for t in map(when, d.runs) if t is not None]
            cells.append(f"{max(times) - min(times):7.2f}" if meaningful and times else f"{'-':>7}")
        print(f"  {label:<{WIDTH}}{cells[0]} {cells[1]}")
    print()
    print_byoc_breakdown(byoc.runs, args.phase_delay)
    print()
    print_local_breakdown(local.runs)


def report_trivial(byoc: Dispatch, local: Dispatch, args: argparse.Namespace, startup: dict[str, float]) -> None:
    per_b = [x.node_end - x.node_start for x in byoc.runs]
    per_l = [x.node_end - x.node_start for x in local.runs]
    print(f"\n== 2. A trivial electron (x + 1), {args.repeats} in a chain (sequential), one dispatch per executor ==")
    print(f"  wall time, dispatch -> result in hand: BYOC on the emulator {byoc.wall:.2f} s, Covalent local "
          f"{local.wall:.2f} s, ratio {byoc.wall / local.wall:.1f}")
    print(f"  node duration per electron (median): BYOC {statistics.median(per_b):.2f} s, local "
          f"{statistics.median(per_l):.3f} s, ratio {statistics.median(per_b) / statistics.median(per_l):.0f}")
    print_cpu(byoc)
    print_cpu(local)
    print()
    print_byoc_breakdown(byoc.runs, args.phase_delay)
    pairs = [(r, r.job) for r in byoc.runs]
    pd = args.phase_delay
    emulated = mean([x["downloading"] - x["created"] for _, x in pairs]) + 2 * pd
    copies = mean([x["training"] - x["downloading"] + x["ended"] - x["uploading"] for _, x in pairs]) - 2 * pd
    process = mean([r.task_start - x["training"] + x["uploading"] - r.task_end for r, x in pairs])
    executor = mean([x["created"] - r.node_start + r.node_end - x["ended"] for r, x in pairs])
    print(f"  BYOC node - local node, per electron (means, which add up): {mean(per_b) - mean(per_l):.2f} s =")
    print(f"    emulated phase sleeps (b1 + 2 x phase_delay) {emulated:.2f}, job process start, imports, exit and logs"
          f" (c + e1) {process:.2f},")
    print(f"    the emulator's S3 copies (b2 + e2 - 2 x phase_delay) {copies:.2f}, the executor (a + f) {executor:.2f},"
          f" the task {mean([r.task_end - r.task_start for r in byoc.runs]):.2f}, minus the local node {mean(per_l):.2f}")
    print(f"  for scale, measured before the servers started, one process at a time: `python -c pass` "
          f"{startup['bare']:.2f} s, `python -c 'import cloudpickle, covalent'` {startup['covalent']:.2f} s")
    print()
    print_local_breakdown(local.runs)
    print()
    print_covalent_overhead(byoc)
    print_covalent_overhead(local)


# --- main ------------------------------------------------------------------------------------------------


def leave(emulator: "EmulatorProcess | None", home: Path, keep: bool) -> None:
    """Stop the emulator process, if one started, and remove the run's files unless ``keep``."""
    if emulator is not None:
        emulator.stop()
    if keep:
        print(f"files kept in {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


def hermetic_environment(home: Path) -> None:
    """No AWS identity or config of the developer's, no metadata service; a private Covalent client."""
    from byoc_executor.local.covalent_server import isolate_client_config

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    aws = home / "aws"
    aws.mkdir(parents=True, exist_ok=True)
    (aws / "config").write_text("")
    (aws / "credentials").write_text("")
    os.environ.update(AWS_CONFIG_FILE=str(aws / "config"), AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
                      AWS_EC2_METADATA_DISABLED="true")
    isolate_client_config(home)  # before anything imports covalent


def main(args: argparse.Namespace) -> int:
    home = Path(tempfile.mkdtemp(prefix="byoc-bench-workflow-"))
    emulator = None
    try:
        hermetic_environment(home)
        import boto3
        import covalent as ct

        from byoc_executor import BYOCExecutor
        from byoc_executor.local.covalent_server import CovalentServer

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        startup = reference_startup(home)
        emulator = EmulatorProcess(home, args.phase_delay)
        boto3.client("s3", endpoint_url=emulator.url, **DUMMY_KEYS).create_bucket(Bucket=BUCKET)
        sagemaker = boto3.client("sagemaker", endpoint_url=emulator.url, **DUMMY_KEYS)
        byoc = BYOCExecutor(service="sagemaker", image_uri=IMAGE, s3_bucket_name=BUCKET, role_arn=ROLE,
                            endpoint_url=emulator.url, poll_freq=args.poll_freq)
        print(f"emulator {emulator.url} (phase delay {args.phase_delay:g} s); starting a private Covalent server...", flush=True)
        started = time.monotonic()
        with CovalentServer(home / "covalent") as server:
            print(f"Covalent server {server.url} up in {time.monotonic() - started:.1f} s", flush=True)

            def cpu() -> dict[str, float]:
                return cpu_seconds(emulator.proc.pid, server.proc.pid)

            def fan_out(executor: Any) -> Callable:
                task = ct.electron(nap, executor=executor)

                @ct.lattice(executor="local", workflow_executor="local")
                def fan(n: int, seconds: float) -> list:
                    return [task(seconds) for _ in range(n)]

                return fan

            def chain(executor: Any) -> Callable:
                task = ct.electron(inc, executor=executor)

                @ct.lattice(executor="local", workflow_executor="local")
                def linked(x: int, repeats: int) -> dict:
                    for _ in range(repeats):
                        x = task(x)
                    return x

                return linked

            # Warm-up, not measured: the server's first use of each executor (plugin objects, the
            # shared AWS clients, the local process pool's workers) is paid here.
            for label, ex in (("BYOC", byoc), ("local", "local")):
                d = run_dispatch(label, server, chain(ex), (0, 1), "inc", cpu, None)
                print(f"warm-up dispatch of one electron on {label}: {d.wall:.1f} s", flush=True)

            print(f"1. concurrency: {args.electrons} x {args.seconds:g} s on BYOC...", flush=True)
            fan_byoc = run_dispatch("BYOC", server, fan_out(byoc), (args.electrons, args.seconds), "nap", cpu, sagemaker)
            print(f"   ... {fan_byoc.wall:.1f} s; on local...", flush=True)
            fan_local = run_dispatch("local", server, fan_out("local"), (args.electrons, args.seconds), "nap", cpu, None)
            print(f"   ... {fan_local.wall:.1f} s", flush=True)
            print(f"2. trivial electron: a chain of {args.repeats} on BYOC, then on local...", flush=True)
            chain_byoc = run_dispatch("BYOC", server, chain(byoc), (0, args.repeats), "inc", cpu, sagemaker)
            chain_local = run_dispatch("local", server, chain("local"), (0, args.repeats), "inc", cpu, None)
    finally:
        leave(emulator, home, args.keep)

    print(f"\nSageMaker jobs on the emulator (phase delay {args.phase_delay:g} s), poll_freq {args.poll_freq:g} s, "
          f"{CORES} cores; the Covalent server, the emulator and every job process share them.")
    report_concurrency(fan_byoc, fan_local, args)
    report_trivial(chain_byoc, chain_local, args, startup)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--electrons", type=int, default=64, help="electrons in the concurrency run (default 64)")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each of them sleeps (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="trivial electrons in the chain (default 5)")
    parser.add_argument("--phase-delay", type=float, default=0.1,
                        help="the emulator's seconds per queued/starting/downloading/uploading phase (default 0.1, "
                        "the Emulator class's; `byoc-executor local` defaults to 0.5)")
    parser.add_argument("--poll-freq", type=float, default=10.0, help="the executor's poll_freq setting (default 10, its default)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server log, job trees)")
    parsed = parser.parse_args()
    if parsed.electrons < 1 or parsed.repeats < 1:
        parser.error("--electrons and --repeats must be at least 1")
    # SIGTERM unwinds like Ctrl-C, so the server and the emulator are stopped by the finally blocks.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main(parsed))
