"""The entry script's contract, called directly (no service around it): both layouts, every exit path."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import cloudpickle
import pytest

from byoc_executor import codec
from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import ResultError, TaskEncodingError


class CustomError(Exception):
    pass


def add(a: int, b: int) -> int:
    print(f"adding {a} and {b}")
    print("to stderr", file=sys.stderr)
    return a + b


def explode() -> None:
    raise CustomError("it broke")


def read_env(name: str) -> str | None:
    return os.environ.get(name)


def make_tree(tmp_path: Path, service: str, function, args=(), kwargs=None, *, tamper=None, hp_extra=None) -> dict:
    """Lay out a job the way the service would, and return its environment."""
    encoded = codec.encode_task(function, list(args), kwargs or {})
    envelope = tamper(encoded.envelope_bytes()) if tamper else encoded.envelope_bytes()
    env = braket_env(tmp_path) if service == "braket" else {contract.ENV_ML_ROOT: str(tmp_path / "opt" / "ml")}
    # Both services write the job's files under /opt/ml (Braket names them under /opt/braket,
    # which does not exist until the entry script links it: see braket_env).
    ml = tmp_path / "opt" / "ml"
    payload = ml / "input" / "data" / contract.PAYLOAD_CHANNEL / contract.PAYLOAD_FILE
    payload.parent.mkdir(parents=True)
    payload.write_bytes(envelope)
    hp = encoded.hyperparameters()
    hp.update(hp_extra or {})
    (ml / "input" / "config").mkdir(parents=True, exist_ok=True)
    (ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hp))
    return env


def braket_env(tree: Path) -> dict[str, str]:
    """The environment Braket gives a job container, relocated under ``tree``.

    As on AWS (Braket SDK ``braket/jobs/local/local_job_container_setup.py``): the variables name
    paths under /opt/braket, the files are under /opt/ml, and /opt/braket does not exist.
    """
    braket = tree / "opt" / "braket"
    return {
        contract.ENV_ML_ROOT: str(tree / "opt" / "ml"),
        contract.ENV_BRAKET_JOB_NAME: "cov-test",
        contract.ENV_BRAKET_INPUT_DIR: str(braket / "input" / "data"),
        contract.ENV_BRAKET_JOB_RESULTS_DIR: str(braket / "model"),
        contract.ENV_BRAKET_HP_FILE: str(braket / "input" / "config" / "hyperparameters.json"),
    }


def result_key(layout: contract.JobLayout) -> str:
    """The task's result key, from its payload's header (as the client keeps it)."""
    with open(layout.payload_file, "rb") as f:
        return contract.open_envelope(f, "payload")[contract.RESULT_KEY_FIELD]


def read_result(layout: contract.JobLayout) -> codec.JobOutcome:
    """What the client makes of the job's results archive, with the task's own result key."""
    return codec.read_results_archive(results_archive(layout), result_key(layout))


def results_archive(layout: contract.JobLayout) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for p in layout.results_dir.iterdir():
            tar.add(p, arcname=p.name)
    return out.getvalue()


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_round_trip(tmp_path: Path, service: str, capsys: pytest.CaptureFixture) -> None:
    env = make_tree(tmp_path, service, add, (2, 3))
    layout = contract.JobLayout(env)
    assert layout.service == service
    assert contract.execute(layout) == contract.EXIT_OK
    assert not layout.failure_file.exists()
    outcome = read_result(layout)
    assert outcome.ok and outcome.value == 5
    assert outcome.stdout == "adding 2 and 3\n"
    assert outcome.stderr == "to stderr\n"
    # What the task printed is also echoed to the job's own streams (the service's logs).
    assert "adding 2 and 3" in capsys.readouterr().out


def test_braket_layout_is_linked_as_aws_containers_link_it(tmp_path: Path) -> None:
    """Braket's files are under /opt/ml, its variables name /opt/braket: the script links the two."""
    env = make_tree(tmp_path, "braket", add, (2, 3))
    braket = tmp_path / "opt" / "braket"
    assert not braket.exists()
    layout = contract.JobLayout(env)
    assert contract.execute(layout) == contract.EXIT_OK
    assert braket.is_symlink() and braket.resolve() == (tmp_path / "opt" / "ml").resolve()
    # The result lands in /opt/ml/model, which is what the service tars to the output path.
    assert (tmp_path / "opt" / "ml" / "model" / contract.RESULT_FILE).is_file()
    assert read_result(layout).value == 5


def test_an_existing_braket_directory_is_left_alone(tmp_path: Path) -> None:
    env = make_tree(tmp_path, "braket", add, (2, 3))
    (tmp_path / "opt" / "braket").symlink_to(tmp_path / "opt" / "ml")  # linked already (a restart)
    assert contract.execute(contract.JobLayout(env)) == contract.EXIT_OK


@pytest.mark.parametrize("variable", [contract.ENV_BRAKET_HP_FILE, contract.ENV_BRAKET_INPUT_DIR, contract.ENV_BRAKET_JOB_RESULTS_DIR])
def test_braket_paths_are_never_guessed(tmp_path: Path, variable: str) -> None:
    env = make_tree(tmp_path, "braket", add, (2, 3))
    del env[variable]
    layout = contract.JobLayout(env)
    assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
    assert f"${variable} is not set" in layout.failure_file.read_text()


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_raising_task(tmp_path: Path, service: str) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, service, explode))
    assert contract.execute(layout) == contract.EXIT_TASK_RAISED
    assert layout.failure_file.read_text() == f"{CustomError.__module__}.CustomError: it broke"
    outcome = read_result(layout)
    assert not outcome.ok
    assert outcome.exception["type"] == f"{CustomError.__module__}.CustomError"
    assert outcome.exception["message"] == "it broke"
    assert 'raise CustomError("it broke")' in outcome.exception["traceback"]
    assert isinstance(pickle.loads(outcome.exception["pickled"]), CustomError)


def test_failure_reason_is_kept_short(tmp_path: Path) -> None:
    def long_error() -> None:
        raise ValueError("x" * 5000)

    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", long_error))
    assert contract.execute(layout) == contract.EXIT_TASK_RAISED
    assert len(layout.failure_file.read_text()) == contract.FAILURE_REASON_LIMIT


class Mark:
    """Unpickling this object writes a file: proof that bytes were unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("unpickled",))


def test_tampered_payload_is_refused_before_unpickling(tmp_path: Path) -> None:
    mark = tmp_path / "mark"

    def swap(envelope: bytes) -> bytes:
        # An attacker with write access to the bucket replaces the payload with a well-formed
        # envelope of their own (a result key of their own too), whose unpickling has a side effect.
        return codec.encode_task(Mark(str(mark)), [], {}).envelope_bytes()

    def rekeyed(envelope: bytes) -> bytes:
        # The genuine body, behind a header whose result key is the attacker's.
        header = contract.open_envelope(io.BytesIO(envelope), "payload")
        head = contract.head_bytes({**header, contract.RESULT_KEY_FIELD: "00" * 32})
        return head + envelope[len(contract.head_bytes(header)):]

    for tamper in (swap, rekeyed):
        layout = contract.JobLayout(make_tree(tmp_path / tamper.__name__, "sagemaker", add, (1, 2), tamper=tamper))
        assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
        assert not mark.exists()
        assert "not the one the client submitted" in layout.failure_file.read_text()
        assert not (layout.results_dir / contract.RESULT_FILE).exists()


def test_payload_without_its_digest_is_refused(tmp_path: Path) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 2), hp_extra={contract.HP_PAYLOAD_DIGEST: ""}))
    assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
    assert "unauthenticated" in layout.failure_file.read_text()


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_payload_of_the_previous_protocol_is_refused_with_the_fix(tmp_path: Path, service: str) -> None:
    """A client of byoc-executor 0.1 (protocol 1: keys in the hyperparameters) meets this image."""
    layout = contract.JobLayout(make_tree(tmp_path, service, add, (1, 2), hp_extra={contract.HP_PROTOCOL: "1"}))
    assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
    reason = layout.failure_file.read_text()
    assert "protocol 1, this image speaks only 2" in reason and "same byoc-executor release" in reason


def test_result_of_the_previous_protocol_is_refused_with_the_fix(tmp_path: Path) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 2)))
    assert contract.execute(layout) == contract.EXIT_OK
    key = result_key(layout)
    with open(layout.results_dir / contract.RESULT_FILE, "r+b") as f:
        header, body = contract.read_envelope(f, "result")
    old = {**header, "protocol": 1}
    (layout.results_dir / contract.RESULT_FILE).write_bytes(contract.head_bytes(old) + body)
    with pytest.raises(ResultError, match="protocol 1, this side speaks only 2"):
        codec.read_results_archive(results_archive(layout), key)


def test_forged_or_unauthenticated_result_is_refused_before_unpickling(tmp_path: Path) -> None:
    """Whoever can write to the bucket replaces the result: the client refuses it unread."""
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 2)))
    assert contract.execute(layout) == contract.EXIT_OK
    key = result_key(layout)
    mark = tmp_path / "client-mark"
    body = cloudpickle.dumps({"ok": True, "value": Mark(str(mark))})
    for authenticate, reason in (
        (None, "not authenticated"),
        (contract.hmac_authenticator("00" * 32), "MAC does not verify"),
    ):
        with open(layout.results_dir / contract.RESULT_FILE, "wb") as f:
            contract.write_envelope(f, body, "result", authenticate=authenticate)
        with pytest.raises(ResultError, match=reason):
            codec.read_results_archive(results_archive(layout), key)
        assert not mark.exists()


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "does not match its digest"),
        (lambda b: b.replace(b'"body_length"', b'"body_lengtH"'), "not the one the client submitted"),
        (lambda b: b"PK\x03\x04" + b[4:], "not a byoc-executor envelope"),
        (lambda b: b[:5], "truncated"),
    ],
)
def test_corrupt_payload_fails_setup(tmp_path: Path, tamper, fragment: str) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, "braket", add, (1, 2), tamper=tamper))
    assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
    assert fragment in layout.failure_file.read_text()
    assert not (layout.results_dir / contract.RESULT_FILE).exists()


def test_version_mismatch_names_both_versions_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 2)))
    real = contract.runtime_versions()
    # The job side runs another cloudpickle than the client that wrote the payload.
    monkeypatch.setattr(contract, "runtime_versions", lambda: {**real, "cloudpickle": "0.0.1"})
    assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
    reason = layout.failure_file.read_text()
    assert f"cloudpickle {real['cloudpickle']} (client) vs 0.0.1 (job)" in reason
    assert "Rebuild the image" in reason


def test_missing_payload_fails_setup(tmp_path: Path) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 2)))
    layout.payload_file.unlink()
    assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
    assert "payload is missing" in layout.failure_file.read_text()


def test_unpicklable_result(tmp_path: Path) -> None:
    def returns_a_lock():
        import threading

        return threading.Lock()

    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", returns_a_lock))
    assert contract.execute(layout) == contract.EXIT_RESULT_FAILED
    assert "could not write the result" in layout.failure_file.read_text()


def test_environment_hyperparameter_reaches_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYOC_TEST_VAR", raising=False)
    env = make_tree(
        tmp_path, "braket", read_env, ("BYOC_TEST_VAR",), hp_extra={contract.HP_ENVIRONMENT: json.dumps({"BYOC_TEST_VAR": "hello"})}
    )
    layout = contract.JobLayout(env)
    assert contract.execute(layout) == contract.EXIT_OK
    assert read_result(layout).value == "hello"


def test_entry_script_runs_as_a_program(tmp_path: Path) -> None:
    """The file runs standalone (as in the image): `python byoc_entry.py train`."""
    env = make_tree(tmp_path, "sagemaker", add, (20, 22))
    run = subprocess.run(
        [sys.executable, contract.__file__, "train"],
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == contract.EXIT_OK, run.stderr
    assert "adding 20 and 22" in run.stdout
    assert read_result(contract.JobLayout(env)).value == 42


def test_unpicklable_argument_names_the_culprit() -> None:
    import threading

    with pytest.raises(TaskEncodingError) as err:
        codec.encode_task(add, [1, threading.Lock()], {})
    assert "argument 1" in str(err.value)


def test_result_archive_checks(tmp_path: Path) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 1)))
    contract.execute(layout)
    result = layout.results_dir / contract.RESULT_FILE
    good = result.read_bytes()
    result.write_bytes(good[:-3])
    with pytest.raises(ResultError, match="truncated"):
        read_result(layout)
    result.unlink()
    died = read_result(layout)
    assert not died.has_result and not died.ok and died.stdout == "adding 1 and 1\n"
    with pytest.raises(ResultError, match="unreadable"):
        codec.read_results_archive(b"not a tar at all", "00" * 32)
    assert hashlib.sha256(good).hexdigest()  # the good envelope was real bytes


def test_sigterm_still_leaves_a_result_and_a_failure_file(tmp_path: Path) -> None:
    """A stop/cancel reaches the container as SIGTERM: the task sees JobStopped and its outcome is written."""
    import signal
    import time

    env = make_tree(tmp_path, "sagemaker", time.sleep, (60,))
    proc = subprocess.Popen(
        [sys.executable, contract.__file__, "train"],
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    layout = contract.JobLayout(env)
    deadline = time.monotonic() + 60
    while not (layout.results_dir / contract.STDOUT_FILE).exists():  # the task has started
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == contract.EXIT_TASK_RAISED
    assert "JobStopped" in layout.failure_file.read_text()
    outcome = read_result(layout)
    assert outcome.exception["type"].endswith("JobStopped")


def test_replaced_braket_source_is_never_imported(tmp_path: Path, emulator, bucket: str) -> None:
    """Whoever can write to the bucket swaps the job's source archive: the job refuses it unread."""
    import hashlib

    import boto3

    from byoc_executor.byoc import _source_archive

    mark = tmp_path / "imported"
    evil = io.BytesIO()
    code = f"open({str(mark)!r}, 'w').write('pwned')\ndef run_job():\n    pass\n".encode()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{contract.ENTRY_MODULE}.py")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    s3 = boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    s3.put_object(Bucket=bucket, Key="evil/source.tar.gz", Body=evil.getvalue())
    genuine = hashlib.sha256(_source_archive()).hexdigest()
    env = make_tree(tmp_path, "braket", add, (1, 2), hp_extra={contract.HP_SOURCE_SHA256: genuine})
    env.update(
        {
            contract.ENV_BRAKET_SCRIPT_S3_URI: f"s3://{bucket}/evil/source.tar.gz",
            contract.ENV_BRAKET_SCRIPT_ENTRY_POINT: contract.BRAKET_ENTRY_POINT,
            contract.ENV_BRAKET_SCRIPT_COMPRESSION_TYPE: "GZIP",
            "AWS_ENDPOINT_URL": emulator.url,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    run = subprocess.run(
        [sys.executable, contract.__file__],
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == contract.EXIT_SETUP_FAILED, run.stderr
    assert not mark.exists()
    assert "replaced after submission" in contract.JobLayout(env).failure_file.read_text()


def test_output_shown_is_the_authenticated_copy(tmp_path: Path) -> None:
    """Re-packing the archive with other stdout.txt/stderr.txt changes nothing the client shows."""
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 2)))
    assert contract.execute(layout) == contract.EXIT_OK
    (layout.results_dir / contract.STDOUT_FILE).write_text("forged output\n")
    (layout.results_dir / contract.STDERR_FILE).write_text("forged errors\n")
    outcome = read_result(layout)
    assert outcome.stdout == "adding 1 and 2\n" and outcome.stderr == "to stderr\n"


def read_task_env() -> dict:
    return {k: os.environ.get(k) for k in ("BYOC_CHECKPOINT_DIR", "BYOC_CURRENT_HOST", "BYOC_HOSTS")}


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_task_learns_its_checkpoint_dir_and_hosts(tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYOC_CHECKPOINT_DIR", "BYOC_CURRENT_HOST", "BYOC_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    # The client's flag: this job has a checkpoint configuration (checkpoint_s3_uri).
    env = make_tree(tmp_path, service, read_task_env, hp_extra={contract.HP_CHECKPOINTS: "true"})
    if service == "braket":
        # Where Braket says (checkpointConfig.localPath; the Braket SDK sends /opt/jobs/checkpoints).
        env[contract.ENV_BRAKET_CHECKPOINT_DIR] = str(tmp_path / "opt" / "jobs" / "checkpoints")
    layout = contract.JobLayout(env)
    assert contract.execute(layout) == contract.EXIT_OK
    value = read_result(layout).value
    expected = str(tmp_path / "opt" / "jobs" / "checkpoints") if service == "braket" else str(layout.ml_root / "checkpoints")
    assert value == {"BYOC_CHECKPOINT_DIR": expected, "BYOC_CURRENT_HOST": "algo-1", "BYOC_HOSTS": "algo-1"}


def test_braket_job_without_a_checkpoint_dir_gets_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYOC_CHECKPOINT_DIR", raising=False)
    layout = contract.JobLayout(make_tree(tmp_path, "braket", read_task_env))
    assert contract.execute(layout) == contract.EXIT_OK
    assert read_result(layout).value["BYOC_CHECKPOINT_DIR"] is None  # no path of the script's own


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_a_job_without_the_checkpoint_flag_gets_no_checkpoint_dir(tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No checkpoint configuration, no directory: not SageMaker's default path (nothing syncs it),
    not a Braket variable the service might set anyway, not one already in the environment."""
    monkeypatch.setenv("BYOC_CHECKPOINT_DIR", str(tmp_path / "left-over"))
    env = make_tree(tmp_path, service, read_task_env, hp_extra={contract.HP_CHECKPOINTS: "false"})
    if service == "braket":
        env[contract.ENV_BRAKET_CHECKPOINT_DIR] = str(tmp_path / "opt" / "braket" / "checkpoints")
    layout = contract.JobLayout(env)
    assert contract.execute(layout) == contract.EXIT_OK
    assert read_result(layout).value["BYOC_CHECKPOINT_DIR"] is None
    assert "BYOC_CHECKPOINT_DIR" not in os.environ


def test_a_braket_job_with_the_flag_but_no_checkpoint_variable_is_a_contract_error(tmp_path: Path) -> None:
    """The flag says there is a checkpointConfig; its directory comes from Braket or not at all."""
    layout = contract.JobLayout(make_tree(tmp_path, "braket", read_task_env, hp_extra={contract.HP_CHECKPOINTS: "true"}))
    assert contract.execute(layout) == contract.EXIT_SETUP_FAILED
    failure = layout.failure_file.read_text()
    assert contract.HP_CHECKPOINTS in failure and contract.ENV_BRAKET_CHECKPOINT_DIR in failure
    assert not (layout.results_dir / contract.RESULT_FILE).exists()


@pytest.mark.parametrize(("current", "all_hosts", "runs"), [("algo-1", "", True), ("algo-2", "", False), ("algo-2", "true", True)])
def test_several_hosts_run_the_task_on_the_leader_only_unless_asked(tmp_path: Path, current: str, all_hosts: str, runs: bool) -> None:
    layout = contract.JobLayout(make_tree(tmp_path, "sagemaker", add, (1, 2), hp_extra={contract.HP_ALL_HOSTS: all_hosts}))
    layout.resource_config.write_text(json.dumps({"current_host": current, "hosts": ["algo-2", "algo-1"]}))
    assert contract.execute(layout) == contract.EXIT_OK
    assert (layout.results_dir / contract.RESULT_FILE).exists() is runs


def test_a_task_group_runs_in_order_each_with_its_output_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    """What Covalent's task packing sends: its serialized assets; a later task reads an earlier one's output."""
    from covalent._workflow.transportable_object import TransportableObject
    from covalent.executor.utils.serialize import deserialize_node_asset, serialize_node_asset

    def asset(fn) -> bytes:
        return serialize_node_asset(TransportableObject(fn), "function")

    tasks = [
        {"node_id": 1, "function": asset(add), "hooks": b"", "args": [0, 9], "kwargs": {}},  # 0 and 9: inputs
        {"node_id": 2, "function": asset(add), "hooks": b"", "args": [1, 9], "kwargs": {}},  # 1: node 1's output
        {"node_id": 3, "function": asset(explode), "hooks": b"", "args": [], "kwargs": {}},
        {"node_id": 4, "function": asset(add), "hooks": b"", "args": [0, 0], "kwargs": {}},
    ]
    inputs = {0: serialize_node_asset(TransportableObject(1), "output"), 9: serialize_node_asset(TransportableObject(10), "output")}
    encoded = codec.encode_group("d-group", tasks, inputs)
    ml = tmp_path / "opt" / "ml"
    (ml / "input" / "data" / contract.PAYLOAD_CHANNEL).mkdir(parents=True)
    (ml / "input" / "data" / contract.PAYLOAD_CHANNEL / contract.PAYLOAD_FILE).write_bytes(encoded.envelope_bytes())
    (ml / "input" / "config").mkdir(parents=True)
    (ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(encoded.hyperparameters()))
    layout = contract.JobLayout({contract.ENV_ML_ROOT: str(ml)})
    assert contract.execute(layout) == contract.EXIT_TASK_RAISED
    outcome = read_result(layout)
    statuses = [(t["node_id"], t["status"]) for t in outcome.tasks]
    assert statuses == [(1, "COMPLETED"), (2, "COMPLETED"), (3, "FAILED"), (4, "NOT_RUN")]
    first, second, failed, skipped = outcome.tasks
    assert deserialize_node_asset(first["output"], "output").get_deserialized() == 11
    assert deserialize_node_asset(second["output"], "output").get_deserialized() == 21
    assert first["stdout"] == "adding 1 and 10\n" and second["stdout"] == "adding 11 and 10\n"  # each task's own
    assert failed["exception"]["type"].endswith("CustomError") and "it broke" in failed["stderr"]
    assert skipped["output"] is None and "not run" in skipped["stderr"]
    assert "CustomError: it broke" in layout.failure_file.read_text()


@pytest.mark.parametrize("uri", [
    "s3://bucket/dispatch/node-0/source/source.tar.gz",
    "https://bucket.s3.us-east-1.amazonaws.com/dispatch/node-0/source/source.tar.gz",
    "https://s3.us-east-1.amazonaws.com/bucket/dispatch/node-0/source/source.tar.gz",
])
def test_the_braket_source_uri_is_read_in_each_form_the_model_admits(uri: str) -> None:
    """botocore's braket ``S3Path`` admits https S3 URLs beside s3:// ones: the service may hand either on."""
    assert contract._split_s3_uri(uri) == ("bucket", "dispatch/node-0/source/source.tar.gz")


def test_a_source_uri_that_is_no_s3_uri_is_a_contract_error() -> None:
    with pytest.raises(contract.ContractError, match="AMZN_BRAKET_SCRIPT_S3_URI"):
        contract._split_s3_uri("file:///opt/ml/code/source.tar.gz")
