"""The shared clients' per-request settings: the User-Agent, the timestamp parser, the GC freeze.

The User-Agent and timestamps are read back from real requests to the emulator (moto underneath);
the parser and the freeze switch are checked as pure logic (the freeze in a fresh interpreter,
since it changes the whole process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from byoc_executor import __version__, aws, storage
from byoc_executor.local import Emulator
from tests.conftest import BUCKET
from tests.emulator_helpers import unique


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-12-01T07:17:24Z", datetime(2026, 12, 1, 7, 17, 24, tzinfo=timezone.utc)),
        ("2026-12-01T07:17:24.123456Z", datetime(2026, 12, 1, 7, 17, 24, 123456, tzinfo=timezone.utc)),
        ("2026-12-01T09:17:24+02:00", datetime(2026, 12, 1, 7, 17, 24, tzinfo=timezone.utc)),
        ("2026-12-01T07:17:24", datetime(2026, 12, 1, 7, 17, 24, tzinfo=timezone.utc)),  # no zone: UTC, as AWS means
        (1796109444, datetime(2026, 12, 1, 7, 17, 24, tzinfo=timezone.utc)),
        (1796109444.5, datetime(2026, 12, 1, 7, 17, 24, 500000, tzinfo=timezone.utc)),
        # Not ISO 8601: handed to botocore's own parser (S3's HTTP-date headers look like this).
        ("Tue, 01 Dec 2026 07:17:24 GMT", datetime(2026, 12, 1, 7, 17, 24, tzinfo=timezone.utc)),
    ],
)
def test_timestamps_parse_to_aware_datetimes(value, expected: datetime) -> None:
    parsed = aws.parse_aws_timestamp(value)
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_unreadable_timestamps_still_fail_loudly() -> None:
    with pytest.raises(ValueError):
        aws.parse_aws_timestamp("not a time")


async def test_requests_carry_the_fixed_user_agent_and_parse_timestamps(emulator: Emulator) -> None:
    target = aws.AWSTarget("us-east-1", "", "", emulator.url, True)
    where = storage.S3Location(BUCKET, f"{unique('ua')}/object")
    agents: list[str] = []

    def record(request, **kwargs) -> None:
        agent = request.headers["User-Agent"]
        agents.append(agent.decode() if isinstance(agent, bytes) else agent)

    try:
        s3 = await aws.pool().client("s3", target)
        s3.meta.events.register("before-send.s3.*", record)
        before = datetime.now(timezone.utc) - timedelta(minutes=1)
        await storage.put_bytes(s3, where, b"x")
        head = await s3.head_object(Bucket=where.bucket, Key=where.key)
        listed = await s3.list_objects_v2(Bucket=where.bucket, Prefix=where.key)
    finally:
        await aws.close_clients()
    assert agents and all(a.startswith(f"byoc-executor/{__version__} aiobotocore/") for a in agents), agents
    assert len(set(agents)) == 1  # the same string every time: nothing rebuilt per request
    # An HTTP-date header and an ISO 8601 body field, both aware and both about now.
    for stamp in (head["LastModified"], listed["Contents"][0]["LastModified"]):
        assert stamp.utcoffset() is not None and stamp >= before


def _freeze_count_after_first_client(env: dict[str, str]) -> int:
    code = (
        "import asyncio, gc\n"
        "from byoc_executor import aws\n"
        "async def main():\n"
        "    target = aws.AWSTarget('us-east-1', '', '', 'http://127.0.0.1:9', True)\n"
        "    await aws.pool().client('s3', target)\n"
        "    await aws.close_clients()\n"
        "asyncio.run(main())\n"
        "print(gc.get_freeze_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_the_heap_is_frozen_once_after_the_first_client_unless_turned_off() -> None:
    env = {k: v for k, v in os.environ.items() if k != aws.GC_FREEZE_VARIABLE}
    assert _freeze_count_after_first_client(env) > 10_000  # Covalent's and botocore's objects
    assert _freeze_count_after_first_client({**env, aws.GC_FREEZE_VARIABLE: "0"}) == 0


async def test_small_objects_download_to_memory_large_ones_to_a_file(emulator: Emulator, tmp_path) -> None:
    target = aws.AWSTarget("us-east-1", "", "", emulator.url, True)
    small = storage.S3Location(BUCKET, f"{unique('dl')}/small")
    large = storage.S3Location(BUCKET, f"{unique('dl')}/large")
    files: list[str] = []

    def spill() -> str:
        files.append(str(tmp_path / f"spill-{len(files)}"))
        return files[-1]

    try:
        s3 = await aws.pool().client("s3", target)
        await storage.put_bytes(s3, small, b"s" * 1000)
        await storage.put_bytes(s3, large, b"L" * 5000)
        assert await storage.download(s3, small, spill, limit=4096) == b"s" * 1000
        assert files == []  # no temporary file for a small object
        path = await storage.download(s3, large, spill, limit=4096)
        assert path == files[0] and open(path, "rb").read() == b"L" * 5000
        with pytest.raises(Exception, match="NoSuchKey|Not Found|404"):
            await storage.download(s3, storage.S3Location(BUCKET, f"{unique('dl')}/missing"), spill)
    finally:
        await aws.close_clients()


def test_digits_are_epoch_seconds_and_fallback_answers_are_aware() -> None:
    # As botocore reads them: a string of digits is epoch seconds, not an ISO 8601 basic date.
    assert aws.parse_aws_timestamp("1796109444") == datetime(2026, 12, 1, 7, 17, 24, tzinfo=timezone.utc)
    # botocore's own parser (dateutil) returns a naive datetime for this form: it is made UTC.
    parsed = aws.parse_aws_timestamp("Dec 1 2026 07:17:24")
    assert parsed == datetime(2026, 12, 1, 7, 17, 24, tzinfo=timezone.utc)
