"""Results authenticated without a secret in the job's description (protocol 2).

Anyone allowed to describe a job (braket:GetJob, sagemaker:DescribeTrainingJob; read-only
policies grant them widely) sees everything in its description: hyperparameters, environment,
tags. Nothing there may authenticate a result. Here the description is read back through the
job API as such a reader would, every string in it is tried as the result key, and a forged
result built from it is planted where the client reads results: the client refuses it unread.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import re
import sys
import tarfile
from pathlib import Path
from typing import Any, Iterator

import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS

from byoc_executor.container import byoc_entry as contract
from tests.test_executor_emulator import boto, execute, executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SERVICES = ["braket", "sagemaker"]


def triple(x: int) -> int:
    print("tripling", x)
    return 3 * x


def nap_then_triple(x: int) -> int:
    import time

    time.sleep(3.0)
    return 3 * x


class Mark:
    """Unpickling this object writes a file: proof that forged bytes were unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("unpickled",))


def description(emulator, service: str, handle: dict) -> dict:
    """What a reader with Describe/GetJob (and ListTags) sees of the job."""
    if service == "braket":
        return boto(emulator, "braket").get_job(jobArn=handle["job_id"], additionalAttributeNames=["QueueInfo"])
    client = boto(emulator, "sagemaker")
    job = client.describe_training_job(TrainingJobName=handle["job_id"])
    job["Tags"] = client.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    return job


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a decoded answer, keys included, and every hex run inside them."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_in(v)
    elif value is not None:
        text = str(value)
        yield text
        yield from re.findall(r"[0-9a-fA-F]{32,}", text)


def candidate_keys(text: str) -> Iterator[bytes]:
    """The bytes a string could stand for as a key: itself, hex-decoded, base64-decoded."""
    yield text.encode()
    try:
        yield bytes.fromhex(text)
    except ValueError:
        pass
    try:
        yield base64.b64decode(text, validate=True)
    except ValueError:
        pass


def result_envelope(archive: bytes) -> tuple[dict, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        data = tar.extractfile(contract.RESULT_FILE).read()  # type: ignore[union-attr]
    return contract.read_envelope(io.BytesIO(data), "result")


def results_archive_key(description: dict, service: str) -> tuple[str, str]:
    if service == "braket":
        uri = description["outputDataConfig"]["s3Path"].rstrip("/") + "/output/model.tar.gz"
    else:
        uri = description["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@pytest.mark.parametrize("service", SERVICES)
async def test_nothing_in_the_job_description_authenticates_its_result(emulator, service: str) -> None:
    ex = executor(emulator, service, keep_artifacts=True, environment={"BYOC_PROBE": "1"}, tags={"team": "q"})
    value, _, stderr, status, listener = await execute(ex, triple, 14)
    assert status == RESULT_STATUS.COMPLETED, stderr
    assert value == 42
    (handle,) = listener.job_handles
    seen = description(emulator, service, handle)
    bucket, key = results_archive_key(seen, service)
    header, _ = result_envelope(boto(emulator, "s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    canonical = contract.canonical_header(header)

    def authenticates(key_bytes: bytes) -> bool:
        mac = hmac.new(key_bytes, contract.RESULT_DOMAIN + canonical, "sha256").hexdigest()
        return hmac.compare_digest(mac, header["mac"])

    tried = {k for s in strings_in(seen) for k in candidate_keys(s)}
    assert len(tried) > 30  # the description really was read: ARNs, paths, digests, tags, ...
    assert not any(authenticates(k) for k in tried)
    # The control: the key in the payload object (which only the job's role and the client read)
    # does authenticate it.
    payload_prefix = key.split("/output/", 1)[0]  # <prefix>/<dispatch>/node-<n>
    with io.BytesIO(boto(emulator, "s3").get_object(Bucket=bucket, Key=f"{payload_prefix}/payload/{contract.PAYLOAD_FILE}")["Body"].read()) as f:
        real = contract.open_envelope(f, "payload")[contract.RESULT_KEY_FIELD]
    assert authenticates(bytes.fromhex(real))
    # The payload is pinned by the request: its header's digest is the hyperparameter.
    hp = seen["hyperParameters"] if service == "braket" else seen["HyperParameters"]
    with io.BytesIO(boto(emulator, "s3").get_object(Bucket=bucket, Key=f"{payload_prefix}/payload/{contract.PAYLOAD_FILE}")["Body"].read()) as f:
        assert contract.header_digest(contract.open_envelope(f, "payload")) == hp[contract.HP_PAYLOAD_DIGEST]


def forged_archive(keys: list[bytes], mark: Path) -> bytes:
    """A results archive whose result is MAC'd under the first candidate key, carrying a Mark."""
    body = cloudpickle.dumps({"ok": True, "value": Mark(str(mark)), "stdout": "", "stderr": ""})

    def authenticate(canonical: bytes) -> dict:
        return {"mac": hmac.new(keys[0], contract.RESULT_DOMAIN + canonical, "sha256").hexdigest()}

    out = io.BytesIO()
    contract.write_envelope(out, body, "result", authenticate=authenticate)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo(contract.RESULT_FILE)
        info.size = len(out.getvalue())
        tar.addfile(info, io.BytesIO(out.getvalue()))
    return archive.getvalue()


@pytest.mark.parametrize("service", SERVICES)
async def test_a_reader_of_the_description_with_write_access_cannot_plant_a_result(emulator, service: str, tmp_path: Path) -> None:
    """Describe access plus write access to the output prefix: the planted result is refused unread."""
    mark = tmp_path / "client-mark"

    async def attack(listener) -> None:
        while not listener.job_handles:
            await asyncio.sleep(0.05)
        (handle,) = listener.job_handles
        seen = await asyncio.to_thread(description, emulator, service, handle)
        # The most plausible keys a reader finds: the 64-hex digests in the hyperparameters.
        hp = seen["hyperParameters"] if service == "braket" else seen["HyperParameters"]
        keys = [bytes.fromhex(v) for v in hp.values() if re.fullmatch(r"[0-9a-f]{64}", v)]
        assert keys, hp
        # Planted right after the job's own upload, before the job reports its end.
        emulator.tamper(handle["job_name"], "replace", body=forged_archive(keys, mark))

    _, _, stderr, status, _ = await execute(executor(emulator, service), nap_then_triple, 5, meanwhile=attack)
    assert status == RESULT_STATUS.FAILED
    assert "MAC does not verify" in stderr, stderr
    assert not mark.exists()
