"""The Braket SDK, which nobody here wrote, against the emulator over HTTP.

Each test runs the SDK in its own Python process (so that ``AWS_ENDPOINT_URL`` and the dummy
credentials reach only it), as a user would: ``AwsQuantumJob.create(...,
wait_until_complete=True)`` with its default log streaming, ``queue_position()``, ``result()``,
``cancel()``, and a ``@hybrid_job`` function returning a value. Nothing of byoc-executor's is
used: no payload, no hyperparameter, no image of ours. The jobs run in script mode as the AWS
Braket container runs them (``byoc_executor/local/braket_script_mode.py``).
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROLE = "arn:aws:iam::123456789012:role/AmazonBraketJobsExecutionRole"
# An AWS-provided Braket job image, by a tag that is not the SDK's built-in ":latest" (the SDK
# then skips its ECR lookup of the image's Python version, which needs AWS's registry).
IMAGE = "292282985366.dkr.ecr.us-east-1.amazonaws.com/amazon-braket-base-jobs:1.0-cpu-py311-ubuntu22.04"
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with Emulator(root=tmp_path_factory.mktemp("outside-braket"), phase_delay=0.2, kill_grace=1.0) as em:
        yield em


def run_sdk(emulator: Emulator, tmp_path: Path, code: str, timeout: float = 240) -> dict:
    """Run ``code`` (which ends by printing one JSON line) with the Braket SDK in a fresh process."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ENDPOINT_URL": emulator.url, "AWS_ACCESS_KEY_ID": "outside", "AWS_SECRET_ACCESS_KEY": "outside",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return {"out": json.loads(done.stdout.strip().splitlines()[-1]), "stdout": done.stdout}


ALGORITHM = '''
import os
from braket.jobs import save_job_result
from braket.jobs import get_hyperparameters, get_job_device_arn, get_job_name

print("the algorithm runs on", get_job_device_arn())
hp = get_hyperparameters()
save_job_result({"answer": int(hp["x"]) * 2, "job": get_job_name(), "device": get_job_device_arn()})
'''


@pytest.mark.parametrize("device", [SV1, "local:braket/braket_sv"])
def test_aws_quantum_job_create_waits_streams_logs_and_returns_results(emulator, tmp_path, device):
    (tmp_path / "algo.py").write_text(ALGORITHM)
    answer = run_sdk(emulator, tmp_path, f'''
        import json
        from braket.aws import AwsQuantumJob
        job = AwsQuantumJob.create(
            device={device!r}, source_module="algo.py", image_uri={IMAGE!r}, role_arn={ROLE!r},
            hyperparameters={{"x": 21}}, wait_until_complete=True,
        )
        position = job.queue_position()
        print(json.dumps({{"state": job.state(), "result": job.result(), "position": position.queue_position,
                          "message": position.message, "arn": job.arn, "name": job.name}}))
    ''')
    out = answer["out"]
    assert out["state"] == "COMPLETED"
    assert out["result"] == {"answer": 42, "job": out["name"], "device": device}
    assert out["position"] is None and "COMPLETED" in out["message"]
    assert "the algorithm runs on" in answer["stdout"]  # the SDK's own log streaming printed the job's lines


def test_queue_position_while_queued(tmp_path):
    """``queue_position()`` on a job that still waits: a number, counting down, then none.

    An emulator of its own, whose jobs stay QUEUED for 6 s (two phases of 3 s): the second job
    on the same device is second in the queue until the first leaves it (``hybrid_jobs.py``,
    ``BraketApi.queue_position``).
    """
    (tmp_path / "algo.py").write_text("print('ran')\n")
    with Emulator(root=tmp_path / "jobs", phase_delay=3.0, kill_grace=1.0) as slow:
        out = run_sdk(slow, tmp_path, f'''
            import json, time
            from braket.aws import AwsQuantumJob
            kwargs = dict(device={SV1!r}, source_module="algo.py", image_uri={IMAGE!r}, role_arn={ROLE!r})
            first = AwsQuantumJob.create(**kwargs)
            second = AwsQuantumJob.create(**kwargs)
            first_state = first.state()
            seen, deadline = [], time.monotonic() + 60
            while time.monotonic() < deadline:
                info = second.queue_position()
                if info.queue_position is None:
                    break
                if not seen or seen[-1]["position"] != info.queue_position:
                    seen.append({{"position": info.queue_position, "message": info.message, "type": type(info).__name__}})
                time.sleep(0.1)
            left = {{"position": info.queue_position, "message": info.message}}
            states = [job.result(poll_timeout_seconds=120, poll_interval_seconds=0.5) is not None and job.state() for job in (first, second)]
            print(json.dumps({{"first_state": first_state, "seen": seen, "left": left, "states": states}}))
        ''')["out"]
    assert out["first_state"] == "QUEUED"  # the second job was created while the first still waited
    assert out["seen"] == [
        {"position": "2", "message": None, "type": "HybridJobQueueInfo"},
        {"position": "1", "message": None, "type": "HybridJobQueueInfo"},
    ], out["seen"]
    assert out["left"]["position"] is None and "does not show queue position" in out["left"]["message"]
    assert out["states"] == ["COMPLETED", "COMPLETED"]


def test_cancel(emulator, tmp_path):
    (tmp_path / "slow.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n")
    out = run_sdk(emulator, tmp_path, f'''
        import json, time
        from braket.aws import AwsQuantumJob
        job = AwsQuantumJob.create(device={SV1!r}, source_module="slow.py", image_uri={IMAGE!r}, role_arn={ROLE!r})
        while job.state() in ("QUEUED",):
            time.sleep(0.5)
        first = job.cancel()
        while job.state() not in ("CANCELLED", "FAILED", "COMPLETED"):
            time.sleep(0.5)
        print(json.dumps({{"first": first, "final": job.state()}}))
    ''')["out"]
    assert out["first"] in ("CANCELLING", "CANCELLED") and out["final"] == "CANCELLED"


def test_hybrid_job_decorator_returns_its_value(emulator, tmp_path):
    out = run_sdk(emulator, tmp_path, f'''
        import json
        from braket.jobs import hybrid_job

        @hybrid_job(device={SV1!r}, image_uri={IMAGE!r}, role_arn={ROLE!r}, wait_until_complete=True)
        def square(n):
            print("squaring", n)
            return {{"square": n * n}}

        job = square(7)
        print(json.dumps({{"state": job.state(), "result": job.result()}}))
    ''')["out"]
    assert out == {"state": "COMPLETED", "result": {"square": 49}}
