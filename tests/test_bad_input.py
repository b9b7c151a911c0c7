"""Bad input is refused before any upload or job, with one clear error naming the setting and the fix."""

from __future__ import annotations

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
