"""pytest fixtures for tests against the local emulator.

Enable with ``pytest_plugins = ["byoc_executor.local.pytest_plugin"]`` in a conftest.

Fixtures:
    byoc_emulator   (session) a started :class:`~byoc_executor.local.Emulator`; its URL is
                    ``byoc_emulator.url``. Stopped, with every job's processes killed, at the end.
    s3_bucket       (function) a fresh, uniquely named bucket in the emulator's S3 (us-east-1).
"""

from __future__ import annotations

import uuid
from typing import Iterator

import boto3
import pytest

from byoc_executor.local import Emulator

REGION = "us-east-1"


def emulator_client(emulator: Emulator, service: str, region: str = REGION):
    """A plain boto3 client for ``service`` pointed at ``emulator``, with dummy credentials."""
    return boto3.client(
        service,
        endpoint_url=emulator.url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="session")
def byoc_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A started emulator shared by the session; job trees live under a pytest temp dir."""
    emulator = Emulator(root=tmp_path_factory.mktemp("byoc-emulator"), phase_delay=0.05, kill_grace=1.0)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def s3_bucket(byoc_emulator: Emulator) -> str:
    """The name of a new, empty bucket in the emulator's S3."""
    name = f"byoc-test-{uuid.uuid4().hex[:12]}"
    emulator_client(byoc_emulator, "s3").create_bucket(Bucket=name)
    return name
