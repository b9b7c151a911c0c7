"""The results watch: one ListObjectsV2 of a dispatch's prefix answers for all its running jobs.

Against the emulator's S3 (moto over loopback HTTP), with the shared aiobotocore client; the pause
schedule is checked as pure logic.
"""

from __future__ import annotations

import asyncio
import logging

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from byoc_executor import aws, results_watch
from byoc_executor.local import Emulator
from byoc_executor.storage import S3Location
from tests.conftest import BUCKET
from tests.emulator_helpers import unique


@pytest.fixture
async def s3(emulator: Emulator):
    """The executor's shared S3 client for the emulator, closed after the test."""
    try:
        yield await aws.pool().client("s3", aws.AWSTarget("us-east-1", "", "", emulator.url, True))
    finally:
        await aws.close_clients()


def sync_s3(emulator: Emulator):
    return boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


async def eventually(condition, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (a loaded CI machine may be slow to get there)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def count_listings(s3) -> list[str]:
    """Record the prefix of every ListObjectsV2 the shared client sends."""
    seen: list[str] = []

    def record(params, **kwargs) -> None:
        seen.append(params.get("Prefix", ""))

    s3.meta.events.register("provide-client-params.s3.ListObjectsV2", record)
    return seen


async def test_one_listing_serves_every_job_of_a_dispatch(emulator: Emulator, s3) -> None:
    dispatch = f"watch/{unique('w')}/"
    archives = [S3Location(BUCKET, f"{dispatch}node-{n}/output/job-{n}/output/model.tar.gz") for n in range(6)]
    listings = count_listings(s3)
    watchers = [results_watch.watch(s3, a, dispatch, poll_freq=10.0) for a in archives]
    await asyncio.sleep(1.0)
    assert not any(w.seen.is_set() for w in watchers)
    # Six jobs watched for a second: alone, each would have checked once or twice (0.5 s, 1.1 s).
    assert 1 <= len(listings) <= 3, listings  # not 6-12
    assert set(listings) == {dispatch}
    for a in archives[:3]:
        await asyncio.to_thread(sync_s3(emulator).put_object, Bucket=a.bucket, Key=a.key, Body=b"archive")
    assert all([await asyncio.wait_for(w.wait(5.0), 6.0) for w in watchers[:3]])
    assert not any(w.seen.is_set() for w in watchers[3:])
    for w in watchers:
        w.close()
    await asyncio.sleep(0)
    assert (s3, BUCKET, dispatch) not in results_watch._groups


async def test_the_watch_stops_when_nobody_waits(emulator: Emulator, s3) -> None:
    dispatch = f"watch/{unique('w')}/"
    listings = count_listings(s3)
    watcher = results_watch.watch(s3, S3Location(BUCKET, f"{dispatch}node-0/out.tar.gz"), dispatch, poll_freq=10.0)
    group = results_watch._groups[(s3, BUCKET, dispatch)]
    await asyncio.sleep(0.6)
    watcher.close()
    watcher.close()  # idempotent
    await eventually(lambda: group._task is not None and group._task.done())
    made = len(listings)
    await asyncio.sleep(1.0)
    assert len(listings) == made  # no listing after the last watcher left
    # A new watcher under the same prefix starts a new group, which works.
    again = results_watch.watch(s3, S3Location(BUCKET, f"{dispatch}node-1/out.tar.gz"), dispatch, poll_freq=10.0)
    await asyncio.to_thread(sync_s3(emulator).put_object, Bucket=BUCKET, Key=f"{dispatch}node-1/out.tar.gz", Body=b"x")
    assert await again.wait(5.0)


async def test_an_archive_outside_the_group_prefix_is_watched_in_its_own_folder(emulator: Emulator, s3) -> None:
    folder = f"elsewhere/{unique('w')}/"
    listings = count_listings(s3)
    watcher = results_watch.watch(s3, S3Location(BUCKET, f"{folder}model.tar.gz"), "some/dispatch/", poll_freq=10.0)
    await asyncio.to_thread(sync_s3(emulator).put_object, Bucket=BUCKET, Key=f"{folder}model.tar.gz", Body=b"x")
    assert await watcher.wait(5.0)
    assert set(listings) == {folder}


async def test_a_listing_that_fails_finds_nothing_and_says_so(emulator: Emulator, s3, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="byoc_executor.results_watch")
    missing = f"no-such-bucket-{unique('w')}".lower()
    watcher = results_watch.watch(s3, S3Location(missing, "d/node-0/model.tar.gz"), "d/", poll_freq=10.0)
    group = results_watch._groups[(s3, missing, "d/")]
    await eventually(lambda: group.listings >= 3)  # three listings failed
    assert not watcher.seen.is_set()
    watcher.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NoSuchBucket" in warnings[0], warnings  # warned once, then quiet


def test_pauses_grow_to_max_pause_then_with_age_never_past_two_seconds_or_poll_freq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results_watch.random, "uniform", lambda a, b: 1.0)
    group = results_watch.PrefixWatch(object(), "b", "p/")
    watcher = results_watch.ArchiveWatcher(group, "p/k", poll_freq=10.0, now=0.0)
    assert watcher.due == results_watch.FIRST_CHECK
    pauses = []
    now = 0.0
    for _ in range(8):
        watcher.checked(now)
        pauses.append(round(watcher.due - now, 4))
        now = watcher.due
    expected, pause = [], results_watch.FIRST_CHECK
    for _ in range(8):
        pause = min(pause * results_watch.BACKOFF, results_watch.MAX_PAUSE)
        expected.append(round(pause, 4))
    assert pauses == expected  # growing by BACKOFF, while young at most MAX_PAUSE
    assert pauses[-1] == results_watch.MAX_PAUSE
    watcher.checked(30.0)  # watched for 30 s: 5% of it
    assert watcher.due - 30.0 == pytest.approx(results_watch.MAX_PAUSE * results_watch.BACKOFF)
    for _ in range(10):
        watcher.checked(30.0)
    assert watcher.due - 30.0 == pytest.approx(results_watch.AGE_SHARE * 30.0)  # grown to 5% of the age
    for _ in range(20):
        watcher.checked(1000.0)
    assert watcher.due - 1000.0 == pytest.approx(results_watch.WATCH_MAX_PAUSE)  # an old job's end: seen within 2 s
    slow = results_watch.ArchiveWatcher(group, "p/k2", poll_freq=1.0, now=0.0)
    for _ in range(20):
        slow.checked(1000.0)
    assert slow.due - 1000.0 == pytest.approx(1.0)  # a shorter poll_freq caps it too


async def test_where_listing_is_denied_each_archive_is_asked_about(emulator: Emulator, s3, caplog: pytest.LogCaptureFixture) -> None:
    """A policy may grant reads but not s3:ListBucket: the watch falls back to HeadObject per job."""

    dispatch = f"watch/{unique('w')}/"
    archive = S3Location(BUCKET, f"{dispatch}node-0/output/model.tar.gz")
    heads: list[str] = []

    def deny_listing(**kwargs):
        # What S3 answers a ListObjectsV2 the policy does not allow (the rest goes to moto).
        return AWSResponse(emulator.url, 403, {}, None), {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}

    s3.meta.events.register("before-call.s3.ListObjectsV2", deny_listing)
    s3.meta.events.register("provide-client-params.s3.HeadObject", lambda params, **kw: heads.append(params["Key"]))
    caplog.set_level(logging.WARNING, logger="byoc_executor.results_watch")
    watcher = results_watch.watch(s3, archive, dispatch, poll_freq=10.0)
    assert not await watcher.wait(1.5)
    await asyncio.to_thread(sync_s3(emulator).put_object, Bucket=BUCKET, Key=archive.key, Body=b"x")
    assert await watcher.wait(5.0)
    assert heads and set(heads) == {archive.key}
    assert any("may not list" in r.getMessage() for r in caplog.records)


async def test_a_network_failure_while_asking_ends_nothing(emulator: Emulator, s3, caplog: pytest.LogCaptureFixture) -> None:
    """S3 unreachable (after botocore's retries) in either mode: the watch goes on and sees the archive later."""
    from botocore.exceptions import EndpointConnectionError

    dispatch = f"watch/{unique('w')}/"
    archive = S3Location(BUCKET, f"{dispatch}node-0/output/model.tar.gz")
    failures = {"ListObjectsV2": 2, "HeadObject": 0}

    def unreachable(model, **kwargs):
        if failures.get(model.name, 0) > 0:
            failures[model.name] -= 1
            raise EndpointConnectionError(endpoint_url=emulator.url)

    s3.meta.events.register("before-call.s3.*", unreachable)
    caplog.set_level(logging.WARNING, logger="byoc_executor.results_watch")
    watcher = results_watch.watch(s3, archive, dispatch, poll_freq=10.0)
    group = results_watch._groups[(s3, BUCKET, dispatch)]
    await eventually(lambda: failures["ListObjectsV2"] == 0)
    group._head_only, failures["HeadObject"] = True, 2  # as after a refused listing
    await eventually(lambda: failures["HeadObject"] == 0)
    assert group._task is not None and not group._task.done()
    await asyncio.to_thread(sync_s3(emulator).put_object, Bucket=BUCKET, Key=archive.key, Body=b"x")
    assert await watcher.wait(5.0)


async def test_a_refused_listing_is_remembered_for_the_next_group(emulator: Emulator, s3) -> None:
    dispatch = f"watch/{unique('w')}/"
    listings: list[str] = []

    def deny_listing(**kwargs):
        listings.append("denied")
        return AWSResponse(emulator.url, 403, {}, None), {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}

    s3.meta.events.register("before-call.s3.ListObjectsV2", deny_listing)
    first = results_watch.watch(s3, S3Location(BUCKET, f"{dispatch}node-0/model.tar.gz"), dispatch, poll_freq=10.0)
    await eventually(lambda: listings == ["denied"])
    first.close()
    second = results_watch.watch(s3, S3Location(BUCKET, f"{dispatch}node-1/model.tar.gz"), dispatch, poll_freq=10.0)
    await asyncio.to_thread(sync_s3(emulator).put_object, Bucket=BUCKET, Key=f"{dispatch}node-1/model.tar.gz", Body=b"x")
    assert await second.wait(5.0)
    assert listings == ["denied"]  # the second group did not ask again


async def test_a_prefix_that_takes_more_pages_than_jobs_switches_to_head_object(emulator: Emulator, s3) -> None:
    dispatch = f"watch/{unique('w')}/"
    sync = sync_s3(emulator)
    for n in range(5):  # kept artifacts of earlier nodes
        await asyncio.to_thread(sync.put_object, Bucket=BUCKET, Key=f"{dispatch}kept-{n}/payload", Body=b"x")

    def small_pages(params, **kwargs) -> None:
        params.setdefault("MaxKeys", 2)

    s3.meta.events.register("provide-client-params.s3.ListObjectsV2", small_pages)  # 3 pages for 5 keys
    heads: list[str] = []
    s3.meta.events.register("provide-client-params.s3.HeadObject", lambda params, **kw: heads.append(params["Key"]))
    archive = S3Location(BUCKET, f"{dispatch}node-9/model.tar.gz")
    watcher = results_watch.watch(s3, archive, dispatch, poll_freq=10.0)
    group = results_watch._groups[(s3, BUCKET, dispatch)]
    await eventually(lambda: group._head_only)
    await asyncio.to_thread(sync.put_object, Bucket=BUCKET, Key=archive.key, Body=b"x")
    assert await watcher.wait(5.0)
    assert heads and set(heads) == {archive.key}
