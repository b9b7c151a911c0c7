"""The emulator's contract is its own, read from AWS's sources; the client's is the entry script's.

Two independent readings of one contract, held against each other here: where they must agree
(the names of the variables the service sets and the image reads, the layout, the limits) a test
says so, and where they differ a test states the difference.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from byoc_executor.container import byoc_entry
from byoc_executor.local import braket_contract, s3_uris, sagemaker_contract

LOCAL = Path(__file__).resolve().parents[1] / "byoc_executor" / "local"
# The one module of local/ that stands for the byoc image itself (process mode's "container"):
# it may read the image's own contract from the entry script. Test harness modules (a Covalent
# server, the pytest plugin) are not the emulator either.
IMAGE_STAND_IN = {"byoc_image.py"}
HARNESS = {"covalent_server.py", "pytest_plugin.py"}
CLIENT_MODULES = ("byoc_executor.container", "byoc_executor.settings", "byoc_executor.codec", "byoc_executor.services",
                  "byoc_executor.byoc", "byoc_executor.pipeline", "byoc_executor.aws", "byoc_executor.errors")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_emulator_modules_import_nothing_of_the_clients_contract():
    offenders = {}
    for path in sorted(LOCAL.glob("*.py")):
        if path.name in IMAGE_STAND_IN | HARNESS:
            continue
        bad = sorted(n for n in _imports(path) if n.startswith(CLIENT_MODULES))
        if bad:
            offenders[path.name] = bad
    assert offenders == {}, offenders


def test_importing_the_emulator_loads_no_client_module():
    """At run time too: ``import byoc_executor.local`` leaves the entry script and settings unloaded."""
    code = (
        "import sys, json, byoc_executor.local, byoc_executor.local.braket_script_mode;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('byoc_executor') and not m.startswith('byoc_executor.local'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == ["byoc_executor"]


def test_braket_variables_the_service_sets_are_those_the_entry_script_reads():
    """Agree: every ``AMZN_BRAKET_*`` name the entry script reads is one the emulator's service sets."""
    read = {value for name, value in vars(byoc_entry).items() if name.startswith("ENV_BRAKET_")}
    assert read == set(braket_contract.ENVIRONMENT)


def test_braket_environment_names_paths_under_opt_braket_that_are_not_there(tmp_path):
    env = braket_contract.container_environment(
        job_name="j", device="local:braket/braket_sv", braket_root=str(tmp_path / "opt/braket"),
        checkpoint_dir=str(tmp_path / "opt/jobs/checkpoints"), output_s3_path="s3://bkt/jobs/j/data", job_token="t",
        script_mode={"s3Uri": "s3://b/jobs/j/script/source.tar.gz", "entryPoint": "m:f", "compressionType": "GZIP"},
    )
    assert env["AMZN_BRAKET_JOB_RESULTS_DIR"] == str(tmp_path / "opt/braket/model")
    assert env["AMZN_BRAKET_HP_FILE"] == str(tmp_path / "opt/braket/input/config/hyperparameters.json")
    assert env["AMZN_BRAKET_INPUT_DIR"] == str(tmp_path / "opt/braket/input/data")
    assert env["AMZN_BRAKET_TASK_RESULTS_S3_URI"] == "s3://bkt/jobs/j/tasks"
    assert not (tmp_path / "opt/braket").exists()  # the container links it


def test_layout_and_limits_agree():
    assert byoc_entry.ENV_ML_ROOT == sagemaker_contract.BASE_DIR_ENV
    assert byoc_entry.DEFAULT_ML_ROOT == str(sagemaker_contract.OPT_ML) == str(braket_contract.OPT_ML)
    assert byoc_entry.BRAKET_ROOT_NAME == braket_contract.OPT_BRAKET.name
    assert byoc_entry.FAILURE_REASON_LIMIT == sagemaker_contract.FAILURE_REASON_LIMIT == braket_contract.FAILURE_REASON_LIMIT
    layout = byoc_entry.JobLayout({byoc_entry.ENV_ML_ROOT: "/opt/ml"})  # SageMaker's
    assert str(layout.hp_file) == f"/opt/ml/{sagemaker_contract.HYPERPARAMETERS_FILE}"
    assert str(layout.results_dir) == f"/opt/ml/{sagemaker_contract.MODEL_DIR}"
    assert str(layout.failure_file) == f"/opt/ml/{sagemaker_contract.FAILURE_FILE}"
    assert str(layout.resource_config) == f"/opt/ml/{sagemaker_contract.RESOURCE_CONFIG_FILE}"
    assert str(layout.checkpoint_dir) == sagemaker_contract.DEFAULT_CHECKPOINT_PATH


def test_where_they_differ_hp_file_and_input_dir():
    """Differ: the entry script requires AMZN_BRAKET_HP_FILE and AMZN_BRAKET_INPUT_DIR (missing =
    ContractError), while the Braket SDK's local mode sets them only for a job with hyperparameters
    or input data. byoc jobs always have both (the payload channel, the protocol hyperparameters),
    so the difference never bites them; the emulator always sets both."""
    layout = byoc_entry.JobLayout({byoc_entry.ENV_BRAKET_JOB_NAME: "j", byoc_entry.ENV_BRAKET_JOB_RESULTS_DIR: "/opt/braket/model"})
    assert sorted(layout.problems()) == ["$AMZN_BRAKET_HP_FILE is not set", "$AMZN_BRAKET_INPUT_DIR is not set"]


def test_where_they_differ_failure_reason_form():
    """Differ: the entry script writes the failure file's text; SageMaker's FailureReason wraps it
    (``AlgorithmError: <text>, exit code: <n>``), Braket's is the text itself."""
    assert sagemaker_contract.failure_reason("ValueError: x", 1) == "AlgorithmError: ValueError: x, exit code: 1"
    assert len(sagemaker_contract.failure_reason("x" * 5000, 1)) == 1024


def _entry_script_reads(uri: str) -> tuple[str, str] | None:
    try:
        return byoc_entry._split_s3_uri(uri)
    except byoc_entry.ContractError:
        return None


# Both readings of the S3 locations botocore's ``S3Path``/``S3Uri`` pattern admits: the entry script's
# (the Braket source it downloads, AMZN_BRAKET_SCRIPT_S3_URI) and the emulator's (s3_uris.py).
S3_URIS_BOTH_READ = {
    "s3://bkt/k/x.tar.gz": ("bkt", "k/x.tar.gz"),
    "s3://bkt//k": ("bkt", "/k"),
    "https://bkt.s3.us-west-2.amazonaws.com/k/x": ("bkt", "k/x"),  # virtual-hosted
    "https://bkt.s3-us-west-2.amazonaws.com/k": ("bkt", "k"),  # virtual-hosted, legacy dash-region
    "https://bkt.s3.amazonaws.com/k": ("bkt", "k"),  # virtual-hosted, global endpoint
    "https://my.bkt.s3.us-west-2.amazonaws.com/k": ("my.bkt", "k"),  # a bucket name with dots
    "https://bkt.s3.dualstack.us-east-1.amazonaws.com/k": ("bkt", "k"),
    "https://s3.us-west-2.amazonaws.com/bkt/k/x": ("bkt", "k/x"),  # path-style
    "https://s3-us-west-2.amazonaws.com/bkt/k": ("bkt", "k"),
    "https://s3.amazonaws.com/bkt/k": ("bkt", "k"),
}
S3_URIS_NEITHER_READS = ["https://example.com/b/k", "http://bkt.s3.amazonaws.com/k", "gs://b/k", "bkt/k", ""]
# (entry script's answer, emulator's answer): None = refused.
S3_URIS_READ_DIFFERENTLY = {
    # No key: the entry script downloads one object and needs its key; a location (an output path)
    # may be a bucket's root for the emulator.
    "s3://bkt": (None, ("bkt", "")),
    "s3://bkt/": (None, ("bkt", "")),
    "https://bkt.s3.amazonaws.com/": (None, ("bkt", "")),
    "https://s3.us-west-2.amazonaws.com/bkt": (None, ("bkt", "")),
    "s3://bkt/k\nx": (None, ("bkt", "k\nx")),  # a newline in the key: the entry script's . stops at it
    # China's endpoints (amazonaws.com.cn): the entry script reads them; the emulator's sources
    # (the S3 user guide's endpoints) do not name them, and it refuses what it could not find.
    "https://bkt.s3.cn-north-1.amazonaws.com.cn/k": (("bkt", "k"), None),
    "https://s3.cn-north-1.amazonaws.com.cn/bkt/k": (("bkt", "k"), None),
    # The emulator checks S3's bucket naming rules and the endpoint's host name; the entry script
    # takes any bucket, and any host ending in amazonaws.com after ".s3." or ".s3-" (boto3 then asks S3
    # for that bucket, so the host it was named with is not used).
    "s3://Bad_Bucket/k": (("Bad_Bucket", "k"), None),
    "https://bkt.s3.evil.com-amazonaws.com/k": (("bkt", "k"), None),
}


def test_s3_uri_forms_both_readings():
    """Agree: s3://, virtual-hosted and path-style https S3 URLs read as the same (bucket, key) by the
    entry script's ``_split_s3_uri`` and the emulator's ``s3_uris.parse``; neither reads what is no
    S3 location. Differ: exactly the cases of S3_URIS_READ_DIFFERENTLY, none of them a form the client
    sends (it sends s3://<bucket>/<key>)."""
    for uri, expected in S3_URIS_BOTH_READ.items():
        assert (_entry_script_reads(uri), s3_uris.parse(uri)) == (expected, expected), uri
    for uri in S3_URIS_NEITHER_READS:
        assert (_entry_script_reads(uri), s3_uris.parse(uri)) == (None, None), uri
    for uri, (entry_script, emulator) in S3_URIS_READ_DIFFERENTLY.items():
        assert (_entry_script_reads(uri), s3_uris.parse(uri)) == (entry_script, emulator), uri


def test_volume_kms_key_both_readings():
    """Agree: over every instance type the SageMaker model enumerates, the client's reading of which
    have local instance storage (settings.has_instance_storage: no VolumeKmsKeyId is sent) and the
    emulator's (sagemaker_contract.has_instance_storage: a VolumeKmsKeyId is refused) are the same.
    Differ: a key ARN whose key part is not a key id the client sends, the emulator refuses."""
    from byoc_executor import settings

    for instance_type in sorted(settings.instance_types("sagemaker")):
        assert settings.has_instance_storage(instance_type) == sagemaker_contract.has_instance_storage(instance_type), instance_type
    assert sagemaker_contract.has_instance_storage("ml.g5.xlarge") and not sagemaker_contract.has_instance_storage("ml.m5.large")
    odd = "arn:aws:kms:us-east-1:123456789012:key/not-a-key-id"
    assert settings.Settings(service="sagemaker", instance_type="ml.m5.large", kms_key_id=odd)._kms_problems() == []
    assert sagemaker_contract.volume_kms_key_problem("ml.m5.large", odd) is not None


def test_job_arns_and_log_prefixes():
    arn = braket_contract.job_arn("us-west-2", "123456789012")
    assert arn.startswith("arn:aws:braket:us-west-2:123456789012:job/") and len(arn.rsplit("/", 1)[1]) == 36
    assert braket_contract.log_stream_prefix("j", arn) == f"j/{arn.rsplit('/', 1)[1]}"
    assert braket_contract.log_stream_prefix("j", "arn:aws:braket:us-west-2:123456789012:job/j") == "j"


def test_container_mode_gets_the_services_layout(tmp_path):
    """Container mode: /opt/ml parts mounted where the services put them, AMZN_BRAKET_* naming
    /opt/braket (not mounted: the image links it), the emulator's own stand-ins left out."""
    from byoc_executor.local.container_launcher import real_layout
    from byoc_executor.local.launchers import LaunchSpec

    tree = tmp_path / "job"
    env = braket_contract.container_environment(
        job_name="j", device="local:braket/braket_sv", braket_root=str(tree / "opt/braket"),
        checkpoint_dir=str(tree / "opt/jobs/checkpoints"), output_s3_path="s3://bkt/jobs/j/data", job_token="t", script_mode=None,
    )
    env.update({"SAGEMAKER_BASE_DIR": str(tree / "opt/ml"), "HOME": str(tree / "home"), "PATH": "/host/bin", "AWS_REGION": "us-east-1"})
    mounts, inside = real_layout(LaunchSpec("j", "braket", ["train"], env, tree))
    assert dict((b, a) for a, b in mounts) == {
        "/opt/ml/input": str(tree / "opt/ml/input"), "/opt/ml/model": str(tree / "opt/ml/model"),
        "/opt/ml/output": str(tree / "opt/ml/output"), "/opt/ml/checkpoints": str(tree / "opt/ml/checkpoints"),
        "/opt/jobs/checkpoints": str(tree / "opt/jobs/checkpoints"),
    }
    assert inside["AMZN_BRAKET_JOB_RESULTS_DIR"] == "/opt/braket/model"
    assert inside["AMZN_BRAKET_HP_FILE"] == "/opt/braket/input/config/hyperparameters.json"
    assert inside["AMZN_BRAKET_CHECKPOINT_DIR"] == "/opt/jobs/checkpoints"
    assert not {"SAGEMAKER_BASE_DIR", "HOME", "PATH"} & set(inside) and inside["AWS_REGION"] == "us-east-1"
