"""Helpers for the rescue tests: the ``byoc-executor`` command as a subprocess, emulator job states."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

CLI = Path(sys.executable).with_name("byoc-executor")
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "Completed", "Failed", "Stopped"}
CANCELLED = {"CANCELLED", "Stopped"}
RUNNING = {"RUNNING", "InProgress"}


def cli(emulator: Any, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``byoc-executor ARGS --endpoint-url <emulator>`` (the console script of this venv)."""
    command = [str(CLI) if CLI.exists() else sys.executable, *([] if CLI.exists() else ["-m", "byoc_executor.cli"])]
    return subprocess.run([*command, *args, "--endpoint-url", emulator.url], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def jobs_json(emulator: Any, *args: str) -> list[dict]:
    done = cli(emulator, "jobs", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def boto(emulator: Any, service: str):
    return boto3.client(service, endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def status_of(emulator: Any, name: str) -> str:
    """The emulator's status of the job named ``name`` ("" if there is none)."""
    for job in emulator.jobs():
        if job["name"] == name:
            return job["status"]
    return ""


def wait_for(emulator: Any, name: str, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (status := status_of(emulator, name)) not in states:
        assert time.monotonic() < deadline, f"job {name} still {status!r} after {timeout} s, not one of {states}"
        time.sleep(0.1)
    return status
