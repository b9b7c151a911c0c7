"""``byoc-executor doctor`` against the emulator: what is right and what is wrong, and the exit code."""

from __future__ import annotations

import pytest

from byoc_executor.cli import main
from tests.conftest import BUCKET, IMAGE, ROLE


def doctor(emulator, capsys: pytest.CaptureFixture, *sets: str) -> tuple[int, str]:
    base = [f"endpoint_url={emulator.url}", f"image_uri={IMAGE}", f"role_arn={ROLE}", f"s3_bucket_name={BUCKET}"]
    argv = ["doctor"]
    for item in base + list(sets):
        argv += ["--set", item]
    code = main(argv)
    return code, capsys.readouterr().out


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_everything_right(emulator, capsys: pytest.CaptureFixture, service: str) -> None:
    code, out = doctor(emulator, capsys, f"service={service}")
    assert code == 0, out
    assert "ok    credentials: arn:aws:" in out and "region us-east-1" in out
    assert f"ok    bucket: s3://{BUCKET}/byoc-executor is reachable and writable" in out
    assert "ok    job API" in out
    assert "FAIL" not in out


def test_everything_wrong_is_listed_with_its_fix(emulator, capsys: pytest.CaptureFixture) -> None:
    code, out = doctor(emulator, capsys, "service=braket", "instance_type=ml.g5.xlarge", "s3_bucket_name=missing-bucket-x")
    assert code == 1
    assert "FAIL  setting instance_type: 'ml.g5.xlarge' is not an instance type braket jobs accept" in out
    assert "FAIL  bucket:" in out and "missing-bucket-x" in out
    assert "checks failed" in out


def test_several_setting_problems_at_once(emulator, capsys: pytest.CaptureFixture) -> None:
    code, out = doctor(emulator, capsys, "region=moon-1", "max_runtime=0", "role_arn=nope")
    assert code == 1
    for setting in ("region", "max_runtime", "role_arn"):
        assert f"FAIL  setting {setting}:" in out
