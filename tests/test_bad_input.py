"""Bad input is refused before any upload or job, with one clear error naming the setting and the fix."""

from __future__ import annotations

import json
import sys
import threading

import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS

from byoc_executor import BYOCExecutor
from byoc_executor.errors import ConfigurationError
from tests.conftest import BUCKET
from tests.test_executor_emulator import add_and_print, execute, executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SERVICES = ["braket", "sagemaker"]


def uploads(emulator) -> int:
    import boto3

    s3 = boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)


async def refused(emulator, ex: BYOCExecutor, fn, *args) -> str:
    """Run the electron; assert it FAILED with no job created and nothing uploaded; return its stderr."""
    jobs_before, objects_before = len(emulator.jobs()), uploads(emulator)
    _, _, stderr, status, listener = await execute(ex, fn, *args)
    assert status == RESULT_STATUS.FAILED
    assert listener.job_handles == []
    assert len(emulator.jobs()) == jobs_before, "a job was created"
    assert uploads(emulator) == objects_before, "something was uploaded"
    return stderr


def returns_self(x):
    return x


@pytest.mark.parametrize(
    ("service", "instance_type", "fragment"),
    [
        ("braket", "ml.g5.xlarge", "braket accepts e.g."),  # a SageMaker GPU type Braket's API does not list
        ("sagemaker", "ml.m5.huge", "sagemaker accepts e.g."),
    ],
)
async def test_instance_type_the_service_does_not_accept(emulator, service: str, instance_type: str, fragment: str) -> None:
    stderr = await refused(emulator, executor(emulator, service, instance_type=instance_type), add_and_print, 1, 2)
    assert "'instance_type'" in stderr and fragment in stderr


@pytest.mark.parametrize("setting", ["image_uri", "s3_bucket_name", "role_arn"])
async def test_missing_required_setting(emulator, setting: str) -> None:
    stderr = await refused(emulator, executor(emulator, "sagemaker", **{setting: ""}), add_and_print, 1, 2)
    assert f"'{setting}' is required" in stderr and "[executors.byoc]" in stderr


@pytest.mark.parametrize("service", SERVICES)
async def test_unpicklable_argument(emulator, service: str) -> None:
    """Covalent hands the executor pickled arguments; a plain caller of run() may not: still refused."""
    from functools import partial

    from covalent._workflow.transportable_object import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    from byoc_executor import aws
    from tests.covalent_listener import Listener

    ex = executor(emulator, service)
    jobs_before, objects_before = len(emulator.jobs()), uploads(emulator)
    listener = Listener(ex)
    try:
        function = partial(wrapper_fn, TransportableObject(returns_self), [], [])
        _, _, stderr, status = await ex.execute(function, [threading.Lock()], {}, "d-unpicklable", "/tmp", 1)
    finally:
        await listener.close()
        await aws.close_clients()
    assert status == RESULT_STATUS.FAILED and listener.job_handles == []
    assert len(emulator.jobs()) == jobs_before and uploads(emulator) == objects_before
    assert "cannot pickle the electron's argument 0" in stderr and "create them inside the electron" in stderr


@pytest.mark.parametrize("service", SERVICES)
async def test_bucket_that_does_not_exist(emulator, service: str) -> None:
    stderr = await refused(emulator, executor(emulator, service, s3_bucket_name="no-such-bucket-here"), add_and_print, 1, 2)
    assert "HeadBucket" in stderr and "no-such-bucket-here" in stderr


async def test_no_credentials_for_aws(emulator) -> None:
    """Without an endpoint override the executor talks to AWS: no credentials is an error before any call."""
    ex = executor(emulator, "sagemaker", endpoint_url="", region="us-east-1")
    stderr = await refused(emulator, ex, add_and_print, 1, 2)
    assert "no AWS credentials found" in stderr and "aws configure" in stderr


async def test_no_region_for_aws(emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    stderr = await refused(emulator, executor(emulator, "braket", endpoint_url="", region=""), add_and_print, 1, 2)
    assert "'region' is not set" in stderr


@pytest.mark.parametrize(
    ("over", "setting"),
    [
        ({"service": "lambda"}, "service"),
        ({"device": "ionq"}, "device"),
        ({"image_uri": "python:3.11"}, "image_uri"),
        ({"role_arn": "arn:aws:iam::12:role/x"}, "role_arn"),
        ({"region": "europe"}, "region"),
        ({"max_runtime": 432_001}, "max_runtime"),
    ],
)
def test_malformed_settings_fail_at_construction(emulator, over: dict, setting: str) -> None:
    jobs_before = len(emulator.jobs())
    with pytest.raises(ConfigurationError) as err:
        executor(emulator, over.pop("service", "braket"), **over)
    assert err.value.setting == setting and err.value.fix
    assert len(emulator.jobs()) == jobs_before


# --- the size limits, refused before any upload or job -----------------------------------------------------
#
# The constructor refuses these values itself (check_shapes). They still reach run() and send() the
# way any attribute does: set on the executor after construction, carried to the Covalent server by
# to_dict() and rebuilt there with from_dict(), which calls no constructor. The executor checks
# again before it uploads anything (pipeline.check_settings).


def as_the_server_rebuilds_it(ex: BYOCExecutor, **attributes) -> BYOCExecutor:
    """``ex`` with ``attributes`` set after construction, as Covalent's server gets it (JSON, from_dict)."""
    data = json.loads(json.dumps(ex.to_dict()))
    data["attributes"].update(attributes)
    return BYOCExecutor.__new__(BYOCExecutor).from_dict(data)


LIMITS = [
    pytest.param("sagemaker", {"environment": {f"V{i}": "x" for i in range(101)}}, "environment", ["has 101 variables", "at most 100"],
                 id="sagemaker-environment-entries"),
    pytest.param("sagemaker", {"environment": {"V": "x" * 513}}, "environment", ["513 characters", "at most 512"],
                 id="sagemaker-environment-value"),
    pytest.param("braket", {"environment": {"V": "x" * 2500}}, "environment", ["as JSON", "at most 2500 characters"],
                 id="braket-environment-as-one-hyperparameter"),
    pytest.param("sagemaker", {"tags": {f"t{i}": "v" for i in range(8)}}, "tags",
                 ["S3 allows 10 tags per object", "at most 7"], id="object-tags"),
    pytest.param("braket", {"tags": {f"t{i}": "v" for i in range(47)}, "tag_objects": False}, "tags",
                 ["a job carries at most 50", "at most 46"], id="job-tags"),
]


@pytest.mark.parametrize(("service", "attributes", "setting", "fragments"), LIMITS)
def test_the_constructor_refuses_the_limits(emulator, service: str, attributes: dict, setting: str, fragments: list[str]) -> None:
    """Why the tests below set the values after construction."""
    with pytest.raises(ConfigurationError) as err:
        executor(emulator, service, **attributes)
    assert err.value.setting == setting


@pytest.mark.parametrize(("service", "attributes", "setting", "fragments"), LIMITS)
async def test_run_refuses_the_limits_before_any_upload_or_job(
    emulator, service: str, attributes: dict, setting: str, fragments: list[str]
) -> None:
    ex = as_the_server_rebuilds_it(executor(emulator, service), **attributes)
    assert {name: getattr(ex, name) for name in attributes} == attributes  # the values did reach the executor
    stderr = await refused(emulator, ex, add_and_print, 1, 2)
    assert f"setting '{setting}'" in stderr, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def one_node_group(ex: BYOCExecutor, dispatch_id: str) -> tuple[list, object, dict]:
    """What Covalent's runner hands send() for one electron, add_and_print(1, 2), its assets staged
    through get_upload_uri (covalent_dispatcher/_core/runner_ng.py)."""
    from pathlib import Path
    from urllib.parse import urlparse

    from covalent._workflow.transportable_object import TransportableObject
    from covalent.executor.schemas import ResourceMap, TaskSpec
    from covalent.executor.utils.serialize import serialize_node_asset

    meta = {"dispatch_id": dispatch_id, "task_group_id": 5, "node_ids": [5]}

    def put(key: str, data: bytes) -> str:
        uri = ex.get_upload_uri(meta, key)
        Path(urlparse(uri).path).write_bytes(data)
        return uri

    function = put("function-5", serialize_node_asset(TransportableObject(add_and_print), "function"))
    inputs = {node: put(f"output-{node}", serialize_node_asset(TransportableObject(value), "output")) for node, value in ((0, 1), (1, 2))}
    return [TaskSpec(electron_id=5, args=[0, 1], kwargs={})], ResourceMap(functions={5: function}, inputs=inputs, hooks={}), meta


async def send_group(ex: BYOCExecutor, check) -> None:
    """send() a one-node group, then ``await check(sent)`` (sent: send()'s answer, or its exception)."""
    import uuid

    from byoc_executor import aws, pipeline
    from tests.covalent_listener import Listener

    listener = Listener(ex)
    try:
        specs, resources, meta = one_node_group(ex, f"d-{uuid.uuid4().hex[:8]}")
        try:
            sent = await ex.send(specs, resources, meta)
        except Exception as e:  # what Covalent's runner records as the group's failure
            sent = e
        await check(ex, meta, sent)
    finally:
        await listener.close()
        await pipeline.settle_background()
        await aws.close_clients()


async def test_send_submits_a_group_within_the_limits(emulator) -> None:
    """The control of the next test: the same group, with the limits at their edge, is uploaded and
    runs as one job (so a refusal below is the check's, not a broken group)."""
    from pathlib import Path
    from urllib.parse import urlparse

    from covalent._shared_files.util_classes import RESULT_STATUS as STATUS
    from covalent.executor.utils.serialize import deserialize_node_asset

    jobs_before, objects_before = len(emulator.jobs()), uploads(emulator)
    ex = as_the_server_rebuilds_it(executor(emulator, "sagemaker"), environment={f"V{i}": "x" * 512 for i in range(100)},
                                   tags={f"t{i}": "v" for i in range(7)})

    async def check(ex, meta, sent) -> None:
        assert isinstance(sent, dict) and sent["mode"] == "job", sent
        assert len(emulator.jobs()) == jobs_before + 1 and uploads(emulator) > objects_before
        (update,) = await ex.receive(meta, await ex.poll(meta, sent))
        assert update.status == STATUS.COMPLETED
        output = Path(urlparse(update.assets["output"].remote_uri).path).read_bytes()
        assert deserialize_node_asset(output, "output").get_deserialized() == 3

    await send_group(ex, check)


@pytest.mark.parametrize(("service", "attributes", "setting", "fragments"), LIMITS)
async def test_send_refuses_the_limits_before_any_upload_or_job(
    emulator, service: str, attributes: dict, setting: str, fragments: list[str]
) -> None:
    """Covalent's managed path (task groups): send() raises, naming the setting and the limit."""
    jobs_before, objects_before = len(emulator.jobs()), uploads(emulator)
    ex = as_the_server_rebuilds_it(executor(emulator, service), **attributes)

    async def check(ex, meta, sent) -> None:
        assert isinstance(sent, ConfigurationError), sent
        assert sent.setting == setting
        for fragment in fragments:
            assert fragment in str(sent), sent

    await send_group(ex, check)
    assert len(emulator.jobs()) == jobs_before, "a job was created"
    assert uploads(emulator) == objects_before, "something was uploaded"
