"""Settings: defaults, checks and their messages, the plugin face, the README table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from byoc_executor import BYOCExecutor
from byoc_executor.byoc import _EXECUTOR_PLUGIN_DEFAULTS, EXECUTOR_PLUGIN_NAME
from byoc_executor.errors import ConfigurationError
from byoc_executor.settings import SETTING_NAMES, Settings, settings_table

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/byoc-jobs"


def good(**over: object) -> dict:
    base = {"service": "braket", "image_uri": IMAGE, "s3_bucket_name": "my-bucket", "role_arn": ROLE}
    base.update(over)
    return base


def test_defaults_are_toml_friendly_and_cover_every_setting() -> None:
    assert set(_EXECUTOR_PLUGIN_DEFAULTS) == set(SETTING_NAMES)
    assert all(v is not None for v in _EXECUTOR_PLUGIN_DEFAULTS.values())  # TOML has no null
    assert EXECUTOR_PLUGIN_NAME == BYOCExecutor.__name__


def test_every_setting_is_a_constructor_argument() -> None:
    import inspect

    params = inspect.signature(BYOCExecutor.__init__).parameters
    assert set(SETTING_NAMES) <= set(params)


def test_executor_survives_covalent_round_trip() -> None:
    ex = BYOCExecutor(**good(service="sagemaker", tags={"team": "q"}, environment={"A": "1"}))
    as_dict = ex.to_dict()
    json.dumps(as_dict)  # the server stores it as JSON
    assert as_dict["short_name"] == "byoc"
    back = BYOCExecutor.__new__(BYOCExecutor).from_dict(json.loads(json.dumps(as_dict)))
    assert back.settings() == ex.settings()


def test_constructor_does_not_touch_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the constructor opened a socket")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    BYOCExecutor(**good())


@pytest.mark.parametrize(
    ("over", "setting", "fragment"),
    [
        ({"service": "batch"}, "service", '"braket" or "sagemaker"'),
        ({"image_uri": "docker.io/library/python:3.11"}, "image_uri", "dkr.ecr"),
        ({"image_uri": IMAGE.split(":")[0]}, "image_uri", "append :<tag>"),
        ({"s3_bucket_name": "s3://my-bucket"}, "s3_bucket_name", "without s3://"),
        ({"role_arn": "byoc-jobs"}, "role_arn", "arn:aws:iam::"),
        ({"region": "Mars-1"}, "region", "us-east-1"),
        ({"device": "sv1"}, "device", "local:<provider>/<simulator>"),
        ({"instance_type": "m5.large"}, "instance_type", "ml.*"),
        ({"instance_count": 6}, "instance_count", "1 to 5"),
        ({"max_runtime": 500_000}, "max_runtime", "1 to 432000"),
        ({"service": "sagemaker", "max_runtime": 0}, "max_runtime", "1 to 2419200"),
        ({"poll_freq": 0}, "poll_freq", "above 0"),
        ({"environment": {"A": 1}}, "environment", "strings to strings"),
        ({"environment": {"1BAD": "x"}}, "environment", "variable name"),
        ({"endpoint_url": "127.0.0.1:5000"}, "endpoint_url", "http"),
    ],
)
def test_bad_settings_name_the_setting_and_the_fix(over: dict, setting: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        BYOCExecutor(**good(**over))
    assert err.value.setting == setting
    assert fragment in str(err.value)


def test_missing_required_settings_fail_at_submission_not_construction() -> None:
    # Covalent's server builds BYOCExecutor(**[executors.byoc]) from defaults before applying
    # the client's settings, so construction with the defaults alone must succeed.
    ex = BYOCExecutor(**_EXECUTOR_PLUGIN_DEFAULTS)
    with pytest.raises(ConfigurationError) as err:
        ex.settings().check_against_models()
    assert err.value.setting == "image_uri" and "[executors.byoc]" in str(err.value)


def test_instance_types_come_from_the_botocore_models() -> None:
    Settings(**good(service="sagemaker", instance_type="ml.g5.xlarge")).check_against_models()
    Settings(**good(instance_type="ml.m5.large")).check_against_models()
    with pytest.raises(ConfigurationError) as err:
        Settings(**good(service="braket", instance_type="ml.g5.xlarge")).check_against_models()
    assert err.value.setting == "instance_type" and "braket accepts" in str(err.value)
    with pytest.raises(ConfigurationError):
        Settings(**good(service="sagemaker", instance_type="ml.m5.huge")).check_against_models()


def test_local_devices_and_loopback_endpoints() -> None:
    Settings(**good(device="local:braket/braket_sv")).check_shapes()
    assert Settings(**good(endpoint_url="http://127.0.0.1:9")).is_local_endpoint
    assert Settings(**good(endpoint_url="http://localhost:9")).is_local_endpoint
    assert not Settings(**good(endpoint_url="https://braket.us-east-1.amazonaws.com")).is_local_endpoint


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert settings_table() in readme, "regenerate the README table: python -m byoc_executor.settings"
    for name in SETTING_NAMES:
        assert re.search(rf"\| `{name}` \|", readme)


def test_checkpoint_s3_uri_accepts_what_the_job_apis_models_accept():
    """Both models' S3 patterns are ``(https|s3)://([^/]+)/?(.*)``: https S3 URLs of a bucket are S3 URIs too."""
    for uri in ("s3://my-bucket/ckpt", "https://my-bucket.s3.us-west-2.amazonaws.com/ckpt", "https://s3.us-west-2.amazonaws.com/my-bucket/ckpt"):
        assert BYOCExecutor(**good(checkpoint_s3_uri=uri)).checkpoint_s3_uri == uri
    for uri in ("http://my-bucket/ckpt", "https://example.com/my-bucket/ckpt", "s3://A_B/ckpt"):
        with pytest.raises(ConfigurationError) as err:
            BYOCExecutor(**good(checkpoint_s3_uri=uri))
        assert err.value.setting == "checkpoint_s3_uri"
