"""The executor under injected faults: failing requests, and jobs whose inputs or results are tampered with.

Real HTTP, the real executor (``BYOCExecutor.execute()``, as Covalent's dispatcher calls it), and a
dedicated emulator with its own bucket, so that the faults injected here disturb no other test.

Tampering tests check that nothing from a tampered result is unpickled on the client. Their task
returns a :class:`Mark`, an object whose *unpickling* (not its construction, which happens in the
job) writes a file on the client's side. With Covalent's real wrapper the value travels inside a
``TransportableObject`` whose inner pickle only ``get_deserialized()`` opens, so these tests hand
``execute()`` the bare function: then the executor's own unpickling of the result is what would
write the mark, and a control run shows that it does for a genuine result.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS
from covalent._workflow.transportable_object import TransportableObject
from covalent.executor.utils.wrappers import wrapper_fn

from byoc_executor import BYOCExecutor, aws, pipeline
from byoc_executor.container import byoc_entry
from byoc_executor.local import Emulator
from byoc_executor.local.faults import FaultPlan, FaultRule, JobFault
from byoc_executor.services import job_name
from tests.conftest import IMAGE, ROLE
from tests.covalent_listener import Listener

# The tasks below live in this test module, which jobs cannot import: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SERVICES = ["braket", "sagemaker"]
BUCKET = "byoc-faults"
JOB_API = {"braket": "braket", "sagemaker": "sagemaker"}
CREATE = {"braket": "CreateJob", "sagemaker": "CreateTrainingJob"}
ELECTRONS = 50  # per service, for the acceptance test
BATCH = 10  # electrons in flight at once (each is a job process)
# What the node's error must say when its result was altered or is gone (wording is the codec's).
VERIFICATION_FAILED = re.compile(r"(?i)truncated|digest|altered|verification|verify|missing|no result|unreadable")


# --- tasks (run inside the job process) -----------------------------------------------------------


def square(x: int) -> int:
    return x * x


def print_then_die(tag: str) -> None:
    print(f"last words of {tag}", flush=True)
    os._exit(7)  # no result, no failure file: the client must read the job's log for the story


class Mark:
    """Built in the job; UNPICKLING it writes ``path``. Pickling it writes nothing anywhere."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("unpickled",))


def leave_mark(path: str, delay: float = 0.0) -> Mark:
    time.sleep(delay)
    return Mark(path)


# --- plumbing -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory):
    with Emulator(root=tmp_path_factory.mktemp("fault-jobs"), phase_delay=0.05, kill_grace=1.0) as em:
        boto(em, "s3").create_bucket(Bucket=BUCKET)
        yield em


@pytest.fixture(autouse=True)
async def fresh(emulator: Emulator):
    """Each test starts and ends without faults, and closes the executor's clients on its loop."""
    emulator.clear_faults()
    yield
    emulator.clear_faults()
    await pipeline.settle_background()
    await aws.close_clients()


def boto(emulator: Emulator, service: str, attempts: int = 8):
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": attempts})
    return boto3.client(
        service, endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y", config=config
    )


def admin(emulator: Emulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{emulator.url}/_byoc/{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def executor(emulator: Emulator, service: str, **over: Any) -> BYOCExecutor:
    settings = dict(
        service=service, image_uri=IMAGE, s3_bucket_name=BUCKET, role_arn=ROLE, endpoint_url=emulator.url,
        device="local:braket/braket_sv", poll_freq=0.5, max_runtime=120,
    )
    settings.update(over)
    return BYOCExecutor(**settings)


@dataclass
class Run:
    value: Any
    stdout: str
    stderr: str
    status: Any
    job_handles: list


async def run(service: str, emulator: Emulator, fn, *args: Any, dispatch_id: str | None = None, node_id: int = 3,
              wrapped: bool = True, meanwhile=None) -> Run:
    """One electron through ``execute()``: with Covalent's real wrapper, or the bare function (see the module doc)."""
    ex = executor(emulator, service)
    listener = Listener(ex)
    dispatch_id = dispatch_id or f"faults-{uuid.uuid4()}"
    if wrapped:
        function, t_args = partial(wrapper_fn, TransportableObject(fn), [], []), [TransportableObject(a) for a in args]
    else:
        function, t_args = fn, list(args)
    side = asyncio.create_task(meanwhile(listener)) if meanwhile else None
    try:
        result, stdout, stderr, status = await ex.execute(function, t_args, {}, dispatch_id, "/tmp", node_id)
        if side:
            await asyncio.wait_for(side, 30)
    finally:
        await listener.close()
    value = result.get_deserialized() if wrapped and result is not None else result
    return Run(value, stdout, stderr, status, list(listener.job_handles))


def count_jobs(emulator: Emulator, service: str, name_part: str) -> list[str]:
    """The names of the service's jobs containing ``name_part``, through the job API (paginated)."""
    names: list[str] = []
    token = None
    while True:
        if service == "braket":
            # Job ARNs end in a UUID, and SearchJobs filters only by jobArn and createdAt: filter names here.
            kwargs = {"filters": [], "maxResults": 7}
            page = boto(emulator, "braket").search_jobs(**kwargs, **({"nextToken": token} if token else {}))
            names += [j["jobName"] for j in page["jobs"] if name_part in j["jobName"]]
            token = page.get("nextToken")
        else:
            kwargs = {"NameContains": name_part, "MaxResults": 7}
            page = boto(emulator, "sagemaker").list_training_jobs(**kwargs, **({"NextToken": token} if token else {}))
            names += [j["TrainingJobName"] for j in page["TrainingJobSummaries"]]
            token = page.get("NextToken")
        if not token:
            return names


# --- the acceptance test ----------------------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("service", SERVICES)
async def test_fifty_electrons_under_ten_percent_failures(emulator: Emulator, service: str) -> None:
    """Issue 5: with 10% of S3 and job-API requests failing, 50 electrons in a row all return
    correct results and the emulator shows exactly 50 jobs.

    S3 faults are half "before", half "after"; every job-API fault is "after" (the request was
    served and its answer lost), so each faulted CreateJob/CreateTrainingJob really created the
    job and the retry had to adopt it instead of starting a second one.
    """
    status, _ = admin(emulator, "POST", "faults", {
        "seed": 5,
        "rules": {"s3": {"rate": 0.1, "mode": "mixed"}, JOB_API[service]: {"rate": 0.1, "mode": "after"}},
    })
    assert status == 200
    tag = f"a{service[0]}{uuid.uuid4().hex[:6]}"  # the readable part of every job name of this test
    dispatches = [f"{tag}-{uuid.uuid4()}" for _ in range(ELECTRONS)]
    runs: list[Run] = []
    started = time.monotonic()
    for first in range(0, ELECTRONS, BATCH):
        batch = [run(service, emulator, square, i, dispatch_id=dispatches[i], node_id=i) for i in range(first, min(first + BATCH, ELECTRONS))]
        runs += await asyncio.gather(*batch)
    elapsed = time.monotonic() - started

    for i, r in enumerate(runs):
        assert r.status == RESULT_STATUS.COMPLETED, f"electron {i}: {r.stderr}"
        assert r.value == i * i
        assert len(r.job_handles) == 1
    expected = {job_name(d, i) for i, d in enumerate(dispatches)}
    listed = count_jobs(emulator, service, f"cov-{tag}-")  # through the (still faulty) job API
    assert len(listed) == ELECTRONS and set(listed) == expected
    assert sorted(j["name"] for j in emulator.jobs() if j["name"].startswith(f"cov-{tag}-")) == sorted(expected)

    _, report = admin(emulator, "GET", "faults")
    plan, injected = report["plan"], report["plan"]["injected"]
    print(f"\n{service}: {ELECTRONS} electrons in {elapsed:.1f}s; faults injected: {json.dumps(injected, sort_keys=True)}")
    # The test cannot pass vacuously: faults hit the calls that matter, and half of them were "after".
    api = JOB_API[service]
    assert injected[api][CREATE[service]]["after"] >= 1, injected
    assert injected["s3"]["PutObject"]["total"] >= 1 and injected["s3"]["GetObject"]["total"] >= 1, injected
    total = sum(c["total"] for ops in injected.values() for c in ops.values())
    after = sum(c.get("after", 0) for ops in injected.values() for c in ops.values())
    assert after * 2 >= total, (after, total)
    seen_creates = plan["seen"][api][CREATE[service]]
    assert seen_creates == ELECTRONS + injected[api][CREATE[service]]["total"]  # one retry per lost answer


# --- CloudWatch Logs throttling ---------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_logs_throttling_neither_fails_electrons_nor_loses_log_lines(emulator: Emulator) -> None:
    """30% of the clients' CloudWatch Logs requests are throttled. The executor reads the logs as
    the job runs (and a dead job's tail from them): electrons still succeed, a job that died
    without a result still gets its log tail in the node's stderr, and every line was shipped."""
    emulator.faults = FaultPlan({"logs": FaultRule(0.3, kinds={"throttle": 1})}, seed=11)
    tags = [f"{s}-{i}" for s in SERVICES for i in range(2)]
    ok = [run(s, emulator, square, 7) for s in SERVICES]
    dying = [run(tag.split("-")[0], emulator, print_then_die, tag) for tag in tags]
    results = await asyncio.gather(*ok, *dying)
    for r in results[: len(ok)]:
        assert r.status == RESULT_STATUS.COMPLETED and r.value == 49, r.stderr
    for r, tag in zip(results[len(ok):], tags):
        assert r.status == RESULT_STATUS.FAILED
        # The executor read the job's CloudWatch log through the throttling to tell the story.
        assert "Last lines of the job's log" in r.stderr and f"last words of {tag}" in r.stderr, r.stderr

    # Every line of every job reached CloudWatch: the emulator's own shipping is never throttled...
    logs = boto(emulator, "logs")
    for r, tag in zip(results[len(ok):], tags):
        name = r.job_handles[0]["job_name"]
        group = "/aws/braket/jobs" if r.job_handles[0]["service"] == "braket" else "/aws/sagemaker/TrainingJobs"
        streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/")["logStreams"]
        events = logs.get_log_events(logGroupName=group, logStreamName=streams[0]["logStreamName"], startFromHead=True)["events"]
        assert f"last words of {tag}" in [e["message"] for e in events]
    # ...nor even seen by the plan, while the clients' reads were throttled.
    plan = emulator.faults
    assert plan.seen("logs", "PutLogEvents") == 0 and plan.seen("logs", "CreateLogStream") == 0
    print(f"\nlogs faults injected: {json.dumps(plan.to_json()['injected'], sort_keys=True)}")
    assert plan.injected("logs", "GetLogEvents") >= 1 and plan.injected("logs", "DescribeLogStreams") >= 1


async def test_emulator_own_traffic_is_never_faulted(emulator: Emulator) -> None:
    """With every client S3 and Logs request failing, a job still gets its inputs, uploads its
    results and ships its logs: the emulator's internal clients are exempt."""
    from tests.emulator_helpers import sagemaker_request, upload_payload

    s3, sagemaker = boto(emulator, "s3"), boto(emulator, "sagemaker")
    name, prefix = f"internal-{uuid.uuid4().hex[:8]}", f"internal/{uuid.uuid4().hex[:8]}"
    hp = upload_payload(s3, BUCKET, prefix, square, 12)
    emulator.faults = FaultPlan({"s3": 1.0, "logs": 1.0}, seed=1, mode="mixed")
    sagemaker.create_training_job(**sagemaker_request(name, BUCKET, prefix, hp))
    for _ in range(300):
        job = sagemaker.describe_training_job(TrainingJobName=name)
        if job["TrainingJobStatus"] != "InProgress":
            break
        await asyncio.sleep(0.1)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert emulator.faults.seen("s3") == emulator.faults.seen("logs") == 0  # nothing of the job's was even seen
    refused = boto(emulator, "s3", attempts=1)
    with pytest.raises(Exception) as caught:
        refused.head_object(Bucket=BUCKET, Key=f"{prefix}/out/{name}/output/model.tar.gz")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (500, 503)
    emulator.clear_faults()
    assert s3.head_object(Bucket=BUCKET, Key=f"{prefix}/out/{name}/output/model.tar.gz")["ContentLength"] > 0


# --- tampered results --------------------------------------------------------------------------------


def forged_archive(mark: Path, authenticated: bool) -> bytes:
    """A results archive whose result.byoc is well framed, with a correct digest, and carries a Mark;
    its MAC (if any) is made with a key of the forger's, since the task's key never left the job."""
    body = cloudpickle.dumps({"ok": True, "value": Mark(str(mark))})
    envelope = io.BytesIO()
    authenticate = byoc_entry.hmac_authenticator(os.urandom(32).hex()) if authenticated else None
    byoc_entry.write_envelope(envelope, body, "result", authenticate=authenticate)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in ((byoc_entry.RESULT_FILE, envelope.getvalue()), (byoc_entry.STDOUT_FILE, b"forged\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


TAMPERING = {
    "flip-byte in result.byoc": {"action": "flip-byte", "member": byoc_entry.RESULT_FILE},
    "flip-byte in the last byte of result.byoc": {"action": "flip-byte", "member": byoc_entry.RESULT_FILE, "offset": -1},
    "flip-byte in the archive": {"action": "flip-byte"},
    "truncate result.byoc": {"action": "truncate", "member": byoc_entry.RESULT_FILE},
    "truncate the archive": {"action": "truncate"},
    "delete": {"action": "delete"},
    "replace, forged MAC": {"action": "replace", "forged": True},
    "replace, no MAC": {"action": "replace", "forged": False},
}


async def test_control_a_genuine_result_is_unpickled_and_leaves_the_mark(emulator: Emulator, tmp_path: Path) -> None:
    """Without tampering the executor's unpickling writes the mark: the tampering tests' check is live."""
    marks = {s: tmp_path / f"mark-{s}" for s in SERVICES}
    runs = await asyncio.gather(*(run(s, emulator, leave_mark, str(marks[s]), wrapped=False) for s in SERVICES))
    for service, r in zip(SERVICES, runs):
        assert r.status == RESULT_STATUS.COMPLETED, r.stderr
        assert marks[service].read_text() == "unpickled"


@pytest.mark.parametrize("case", list(TAMPERING))
async def test_tampered_result_fails_the_node_and_is_never_unpickled(emulator: Emulator, tmp_path: Path, case: str) -> None:
    spec = dict(TAMPERING[case])

    async def one(service: str) -> tuple[Run, Path, str]:
        mark = tmp_path / f"mark-{service}"
        dispatch = f"tamper-{uuid.uuid4()}"
        name = job_name(dispatch, 3)
        fault = dict(spec)
        if fault.pop("forged", None) is not None:
            fault["body"] = base64.b64encode(forged_archive(mark, authenticated=spec["forged"])).decode()
        status, answer = await asyncio.to_thread(admin, emulator, "POST", f"jobs/{name}/tamper", fault)  # armed before the job exists
        assert status == 200 and answer["armed"][0]["action"] == spec["action"], answer
        return await run(service, emulator, leave_mark, str(mark), dispatch_id=dispatch, wrapped=False), mark, name

    for r, mark, name in await asyncio.gather(*(one(s) for s in SERVICES)):
        applied = emulator.job_faults.applied(name)
        assert len(applied) == 1 and not applied[0]["detail"].startswith("could not"), applied
        assert r.status == RESULT_STATUS.FAILED, r.stderr
        assert r.value is None
        assert VERIFICATION_FAILED.search(r.stderr), r.stderr
        assert not mark.exists(), "a tampered result was unpickled on the client"
        print(f"\n{case}: {applied[0]['detail']} -> {r.stderr.strip().splitlines()[-1]}")


@pytest.mark.parametrize("service", SERVICES)
async def test_result_tampered_while_the_job_runs_with_the_real_wrapper(emulator: Emulator, tmp_path: Path, service: str) -> None:
    """Armed mid-run over HTTP; the node fails, and even deserializing what came back writes no mark."""
    mark = tmp_path / "mark"

    async def arm_when_running(listener: Listener) -> None:
        while not listener.job_handles:
            await asyncio.sleep(0.05)
        name = listener.job_handles[0]["job_name"]
        while not any(j["name"] == name and j["pid"] for j in emulator.jobs()):
            await asyncio.sleep(0.05)
        status, answer = await asyncio.to_thread(admin, emulator, "POST", f"jobs/{name}/tamper", {"action": "flip-byte", "member": byoc_entry.RESULT_FILE})
        assert status == 200, answer

    r = await run(service, emulator, leave_mark, str(mark), 2.0, meanwhile=arm_when_running)
    assert r.status == RESULT_STATUS.FAILED and VERIFICATION_FAILED.search(r.stderr), r.stderr
    assert r.value is None and not mark.exists()
    name = r.job_handles[0]["job_name"]
    assert "flipped byte" in emulator.job_faults.applied(name)[0]["detail"]
    # Too late now: the job has uploaded its result, so a new tampering would never apply.
    status, answer = admin(emulator, "POST", f"jobs/{name}/tamper", {"action": "delete"})
    assert status == 409 and "already passed" in answer["message"]


# --- the payload deleted under the job --------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_payload_deleted_under_the_job_fails_the_node_naming_it(emulator: Emulator, service: str) -> None:
    dispatch = f"noinput-{uuid.uuid4()}"
    name = job_name(dispatch, 3)
    emulator.tamper(name, "delete-input")
    r = await run(service, emulator, square, 3, dispatch_id=dispatch)
    assert r.status == RESULT_STATUS.FAILED and r.value is None
    (applied,) = emulator.job_faults.applied(name)
    assert applied["detail"].startswith("deleted 1 input object"), applied
    assert re.search(r"(?i)(no s3 objects found|missing|not found).*payload", r.stderr), r.stderr


# --- the control surfaces ------------------------------------------------------------------------------


def test_fault_plan_decisions_are_reproducible_and_counted() -> None:
    def decisions(seed: int) -> list:
        plan = FaultPlan({"s3": 0.3, "braket": FaultRule(0.5, mode="after", operations=("CreateJob",))}, seed=seed)
        out = [plan.decide("s3", op) for op in ("PutObject", "GetObject") * 50]
        out += [plan.decide("braket", op) for op in ("CreateJob", "GetJob") * 20]
        return out, plan

    first, plan = decisions(7)
    assert first == decisions(7)[0] and first != decisions(8)[0]
    faults = [f for f in first if f is not None]
    assert 15 <= plan.injected("s3") <= 45 and plan.injected("braket", "GetJob") == 0
    assert all(f.mode == "after" and f.kind != "throttle" for f in faults if f.api == "braket")
    assert plan.injected() == len(faults) and plan.seen("s3", "PutObject") == 50
    counts = plan.to_json()["injected"]["s3"]["PutObject"]
    assert counts["total"] == counts.get("before", 0) + counts.get("after", 0)
    for bad in ({"rates": {"s3": 1.5}}, {"rates": {"s3": 0.1}, "mode": "sideways"}, {"rules": {"s3": {"rate": 0.1, "kinds": {"teapot": 1}}}}, [1]):
        with pytest.raises(ValueError):
            FaultPlan.from_json(bad)
    for bad_fault in ({"action": "shred"}, {"action": "replace"}, {"action": "delete", "member": "x"}, {"action": "flip-byte", "offset": "1"}):
        with pytest.raises(ValueError):
            JobFault.from_json(bad_fault)


def test_faults_over_http_and_the_error_shapes(emulator: Emulator) -> None:
    assert admin(emulator, "POST", "faults", {"rates": {"s3": 2}})[0] == 400
    assert admin(emulator, "POST", "jobs/some-job/tamper", {"action": "shred"})[0] == 400
    status, report = admin(emulator, "POST", "faults", {"rates": {"s3": 1, "logs": 1, "sagemaker": 1, "braket": 1}, "kinds": {"throttle": 1}, "seed": 3})
    assert status == 200 and report["plan"]["rules"]["s3"]["rate"] == 1
    once = {s: boto(emulator, s, attempts=1) for s in ("s3", "logs", "sagemaker", "braket")}
    calls = {
        "s3": lambda: once["s3"].get_object(Bucket=BUCKET, Key="anything"),
        "logs": lambda: once["logs"].describe_log_groups(),
        "sagemaker": lambda: once["sagemaker"].list_training_jobs(),
        "braket": lambda: once["braket"].search_jobs(filters=[]),
    }
    seen = {}
    for api, call in calls.items():
        with pytest.raises(Exception) as caught:
            call()
        seen[api] = (caught.value.response["ResponseMetadata"]["HTTPStatusCode"], caught.value.response["Error"]["Code"])
    assert seen == {
        "s3": (503, "SlowDown"),
        "logs": (400, "ThrottlingException"),
        "sagemaker": (400, "ThrottlingException"),
        "braket": (429, "ThrottlingException"),
    }
    status, final = admin(emulator, "DELETE", "faults")
    assert status == 200 and final["plan"]["injected"]["s3"]["GetObject"] == {"total": 1, "before": 1, "throttle": 1}
    assert admin(emulator, "GET", "faults")[1]["plan"] is None
    once["s3"].head_bucket(Bucket=BUCKET)  # and nothing fails any more


def test_cli_local_injects_faults(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("byoc-executor")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "byoc_executor.cli"]
    command += ["local", "--root", str(tmp_path), "--fault-rate", "s3=1", "--fault-rate", "braket=0.1", "--fault-seed", "7", "--fault-mode", "after"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.poll() is not None else url  # type: ignore[union-attr]
        assert "injecting faults (after, seed 7): s3 1, braket 0.1" in process.stdout.readline()  # type: ignore[union-attr]
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
                          config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}))
        with pytest.raises(Exception) as caught:
            s3.create_bucket(Bucket="made-despite-the-error")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (500, 503)
        report = json.loads(urllib.request.urlopen(f"{url}/_byoc/faults").read())
        assert report["plan"]["seed"] == 7 and report["plan"]["rules"]["braket"]["rate"] == 0.1
        assert report["plan"]["injected"]["s3"]["CreateBucket"]["after"] == 1
        urllib.request.urlopen(urllib.request.Request(f"{url}/_byoc/faults", method="DELETE"))
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert "made-despite-the-error" in names  # "after": the request was served, its answer lost
    finally:
        process.terminate()
        process.wait(15)


def test_a_rule_with_a_window_fails_every_call_inside_it_and_none_outside() -> None:
    """``start``/``duration``: an outage of T seconds, not a rate (what outlasts botocore's retries)."""
    plan = FaultPlan.from_json({"rules": {"braket": {"rate": 1.0, "kinds": {"throttle": 1.0}, "operations": ["GetJob"],
                                                     "start": 5, "duration": 90}}})
    fates = []
    for t in (0.0, 4.9, 5.1, 50.0, 94.9, 95.1, 300.0):
        plan.installed = time.monotonic() - t  # as if installed t seconds ago
        fates.append(plan.decide("braket", "GetJob") is not None)
    assert fates == [False, False, True, True, True, False, False]
    assert plan.decide("braket", "CreateJob") is None
    assert plan.to_json()["rules"]["braket"]["duration"] == 90
    with pytest.raises(ValueError, match="duration"):
        FaultPlan.from_json({"rules": {"braket": {"rate": 1.0, "duration": -1}}})
