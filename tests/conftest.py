"""Test-wide setup: an isolated Covalent client, hermetic AWS configuration, shared servers.

The Covalent client configuration is isolated HERE, at import time, because ``import covalent``
reads it once: nothing in the test session reads or writes the user's ~/.config/covalent.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from byoc_executor.local.covalent_server import CovalentServer, isolate_client_config

_HOME = Path(tempfile.mkdtemp(prefix="byoc-tests-"))
isolate_client_config(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)


def _scrub_aws(empty: Path) -> dict[str, str]:
    """Environment that hides every AWS credential and config file, and the metadata service."""
    empty.mkdir(parents=True, exist_ok=True)
    (empty / "config").write_text("")
    (empty / "credentials").write_text("")
    return {
        "AWS_CONFIG_FILE": str(empty / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# The whole session, and every server it starts (they inherit this environment), sees no AWS
# identity of the developer's; the autouse fixture below restores this for every test.
for _name in [n for n in os.environ if n.startswith("AWS_")]:
    del os.environ[_name]
os.environ.update(_scrub_aws(_HOME / "aws"))

pytest_plugins = ["byoc_executor.local.pytest_plugin"]

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor:test"
ROLE = "arn:aws:iam::123456789012:role/byoc-jobs"
BUCKET = "byoc-tests"


@pytest.fixture(autouse=True)
def hermetic_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test sees the machine's AWS credentials or config, or asks an instance metadata service."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in _scrub_aws(tmp_path_factory.mktemp("aws-config")).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def emulator(byoc_emulator):
    """The session's emulator, with the tests' bucket created."""
    from byoc_executor.local.pytest_plugin import emulator_client

    emulator_client(byoc_emulator, "s3").create_bucket(Bucket=BUCKET)
    return byoc_emulator


@pytest.fixture(scope="module")
def slow_queue(tmp_path_factory: pytest.TempPathFactory):
    """An emulator whose jobs wait 20 s in each phase before they run (a long queue); one per module."""
    from byoc_executor.local import Emulator
    from byoc_executor.local.pytest_plugin import emulator_client

    with Emulator(root=tmp_path_factory.mktemp("slow-queue"), phase_delay=20.0, kill_grace=1.0) as em:
        emulator_client(em, "s3").create_bucket(Bucket=BUCKET)
        yield em


@pytest.fixture(scope="session")
def bucket(emulator) -> str:
    return BUCKET


@pytest.fixture(scope="session")
def covalent_server(emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CovalentServer]:
    """A real Covalent server with its own dirs; its [executors.byoc] section points at the emulator."""
    home = tmp_path_factory.mktemp("covalent-server")
    section = {
        "service": "sagemaker",
        "image_uri": IMAGE,
        "s3_bucket_name": BUCKET,
        "role_arn": ROLE,
        "endpoint_url": emulator.url,
        "poll_freq": 1.0,
        "environment": {"BYOC_FROM_CONF": "set-in-covalent-conf"},
    }
    # The server inherits the session's scrubbed environment (see the top of this file).
    with CovalentServer(home, executors={"byoc": section}) as server:
        yield server
