"""Large payloads and results: streamed to and from disk, multipart to moto S3, verified in chunks.

The sizes here are tens of MiB, enough to take every large-object path (a spilled pickle, a
multipart upload, a streamed archive); the 1 GiB figures are in ``bench/transfer.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile

import boto3
import cloudpickle
import pytest
from covalent._shared_files.util_classes import RESULT_STATUS

from byoc_executor import aws, codec, storage
from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import ResultError
from byoc_executor.local import Emulator
from tests.conftest import BUCKET
from tests.emulator_helpers import unique
from tests.test_executor_emulator import execute, executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MiB = 1024 * 1024


def echo_digest(data: bytes) -> tuple[str, bytes]:
    """Return the argument's digest, and a different value of the same size."""
    return hashlib.sha256(data).hexdigest(), bytes(reversed(data))


def s3_client(emulator: Emulator):
    return boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def test_a_large_payload_spills_to_disk_and_round_trips(tmp_path) -> None:
    data = os.urandom(3 * MiB)
    encoded = codec.encode_task(len, [data], {}, spool_limit=MiB)
    try:
        assert encoded.body is None and encoded.body_path and os.path.getsize(encoded.body_path) == encoded.body_length
        path = tmp_path / "task.byoc"
        path.write_bytes(encoded.envelope_bytes())
        with open(path, "rb") as f:
            header = contract.open_envelope(f, "payload", expected_header_digest=encoded.header_digest)
            task = cloudpickle.load(f)
        assert header["body_length"] == encoded.body_length
        assert task["args"][0] == data and task["function"] is len
    finally:
        encoded.discard()
    assert not os.path.exists(encoded.body_path)


def test_a_small_payload_stays_in_memory() -> None:
    encoded = codec.encode_task(len, [b"x" * 1000], {})
    assert encoded.body_path is None and encoded.body is not None
    header, body = contract.read_envelope(io.BytesIO(encoded.envelope_bytes()), "payload", expected_header_digest=encoded.header_digest)
    assert cloudpickle.loads(body)["args"] == [b"x" * 1000]


def test_an_envelope_with_bytes_after_its_body_is_refused() -> None:
    encoded = codec.encode_task(len, [b"abc"], {})
    with pytest.raises(contract.ContractError, match="more than"):
        contract.open_envelope(io.BytesIO(encoded.envelope_bytes() + b"!"), "payload")


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multipart from 1 MiB up, in 5 MiB parts (S3's smallest part size)."""
    monkeypatch.setattr(storage, "SINGLE_REQUEST_LIMIT", MiB)
    monkeypatch.setattr(storage, "PART_SIZE", 5 * MiB)


async def test_multipart_upload_of_pieces_reads_back_byte_for_byte(emulator: Emulator, small_parts, tmp_path) -> None:
    head = os.urandom(1000)
    body = tmp_path / "body"
    body.write_bytes(os.urandom(12 * MiB + 7))
    where = storage.S3Location(BUCKET, f"{unique('multipart')}/object")
    target = aws.AWSTarget("us-east-1", "", "", emulator.url, True)
    try:
        s3 = await aws.pool().client("s3", target)
        size = await storage.upload(s3, where, [head, str(body)], tags={"purpose": "test"})
        out = tmp_path / "back"
        assert await storage.download_file(s3, where, str(out)) == size == len(head) + body.stat().st_size
    finally:
        await aws.close_clients()
    assert out.read_bytes() == head + body.read_bytes()
    sync = s3_client(emulator)
    assert sync.head_object(Bucket=BUCKET, Key=where.key)["ContentLength"] == size
    assert sync.get_object_tagging(Bucket=BUCKET, Key=where.key)["TagSet"] == [{"Key": "purpose", "Value": "test"}]


async def test_a_failed_multipart_upload_is_aborted(emulator: Emulator, small_parts, tmp_path) -> None:
    body = tmp_path / "body"
    body.write_bytes(os.urandom(11 * MiB))
    where = storage.S3Location(BUCKET, f"{unique('aborted')}/object")
    target = aws.AWSTarget("us-east-1", "", "", emulator.url, True)
    real_read = storage._read_range

    async def failing_read(pieces, sizes, offset, length):
        if offset > 0:
            raise OSError("disk went away")
        return await real_read(pieces, sizes, offset, length)

    storage._read_range = failing_read
    try:
        s3 = await aws.pool().client("s3", target)
        with pytest.raises(OSError, match="disk went away"):
            await storage.upload(s3, where, [str(body)])
    finally:
        storage._read_range = real_read
        await aws.close_clients()
    sync = s3_client(emulator)
    uploads = sync.list_multipart_uploads(Bucket=BUCKET, Prefix=where.key).get("Uploads", [])
    assert uploads == []
    assert "Contents" not in sync.list_objects_v2(Bucket=BUCKET, Prefix=where.key)


def _archive_with(tmp_path, members: list[tuple[str, bytes]]) -> str:
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _result_envelope(value, key: str) -> bytes:
    out = io.BytesIO()
    contract.write_envelope(out, cloudpickle.dumps({"ok": True, "value": value}), "result", authenticate=contract.hmac_authenticator(key))
    return out.getvalue()


def test_a_result_archive_is_read_in_one_pass(tmp_path) -> None:
    key = "ab" * 32
    value = os.urandom(5 * MiB)
    archive = _archive_with(tmp_path, [(contract.STDOUT_FILE, b"printed\n"), (contract.RESULT_FILE, _result_envelope(value, key))])
    outcome = codec.read_results_archive(archive, key)
    assert outcome.ok and outcome.value == value


def test_a_result_archive_with_two_results_is_refused(tmp_path) -> None:
    key = "ab" * 32
    envelope = _result_envelope(1, key)
    archive = _archive_with(tmp_path, [(contract.RESULT_FILE, envelope), (contract.RESULT_FILE, _result_envelope(2, key))])
    with pytest.raises(ResultError, match="failed verification"):
        codec.read_results_archive(archive, key)


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
async def test_a_large_argument_and_result_through_a_job(emulator: Emulator, service: str) -> None:
    """20 MiB each way: the payload spills, goes up in parts, and the result comes back verified."""
    data = os.urandom(20 * MiB)
    value, _, stderr, status, _ = await execute(executor(emulator, service), echo_digest, data)
    assert status == RESULT_STATUS.COMPLETED, stderr
    digest, reversed_data = value
    assert digest == hashlib.sha256(data).hexdigest()
    assert reversed_data == bytes(reversed(data))


def test_no_payload_files_are_left_behind_by_a_failed_encoding(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(Exception, match="cannot pickle"):
        codec.encode_task(len, [os.urandom(2 * MiB), threading.Lock()], {}, spool_limit=MiB)
    assert list(tmp_path.iterdir()) == []

