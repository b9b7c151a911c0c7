"""Benchmark: a large argument and a large result through moto S3, against boto3's TransferManager.

Each measurement runs in a fresh child process, so its peak memory (``ru_maxrss``) is its own:

- upload, byoc: an argument of SIZE random bytes, held in memory as a task's argument is, goes
  through the executor's path: ``codec.encode_task`` (pickled, spilling to a temporary file) and
  ``storage.upload`` (a multipart upload of the envelope's pieces), as ``BYOCExecutor.run`` does;
- upload, byoc file / s3transfer file: the same number of bytes from a file on disk, through
  ``storage.upload_file`` and through ``boto3``'s ``upload_file`` (s3transfer's TransferManager,
  default configuration), to compare the transfers alone;
- download, byoc: a results archive holding a SIZE-byte return value (written as the job writes
  it) is fetched, verified and unpickled, as the executor does when a job ends;
- download, byoc file / s3transfer file: the archive's bytes to a file, through
  ``storage.download_file`` and through boto3's ``download_file``.

For each: seconds, MB/s, the process's memory before (the interpreter, plus the argument for
uploads) and its peak, and the longest event-loop stall while it ran (byoc rows).

Usage: python bench/transfer.py [--size-mib 1024]
No timed assertions anywhere: this prints figures for the README's performance table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUCKET = "bench-transfer"
CREDENTIALS = dict(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
RESULT_KEY = "cd" * 32
MiB = 1024 * 1024


def rss_mib() -> float:
    """The process's resident memory now."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_emulator() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "byoc_executor.cli", "local", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    line = proc.stdout.readline()
    return proc, line.rsplit(" ", 1)[-1].strip()


# -- children: one measurement each ------------------------------------------------------------------


async def _with_ticker(work):
    """Run ``work()`` and return (its result, seconds, the longest event-loop stall in ms)."""
    stalls = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            stalls.append(time.perf_counter() - t0 - 0.005)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    try:
        value = await work()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        await tick
    return value, seconds, 1000 * max(stalls)


async def _byoc(mode: str, url: str, size: int, path: str) -> dict:
    from byoc_executor import aws, codec, storage
    from types import SimpleNamespace

    from byoc_executor.pipeline import fetch_outcome
    from byoc_executor.services import JobState, JobStatus

    target = aws.AWSTarget("us-east-1", "", "", url, True)
    s3 = await aws.pool().client("s3", target)
    where = storage.S3Location(BUCKET, f"{mode}/object")
    figures: dict = {}
    try:
        if mode == "upload-byoc":
            data = os.urandom(size)
            figures["before_mib"] = rss_mib()

            async def work() -> None:
                t0 = time.perf_counter()
                encoded = await asyncio.to_thread(codec.encode_task, len, [data], {})
                figures["encode_s"] = time.perf_counter() - t0
                try:
                    await storage.upload(s3, where, encoded.pieces())
                finally:
                    await asyncio.to_thread(encoded.discard)

        elif mode == "upload-byoc-file":
            figures["before_mib"] = rss_mib()

            async def work() -> None:
                await storage.upload_file(s3, path, where)

        elif mode == "download-byoc":
            figures["before_mib"] = rss_mib()
            status = JobStatus(
                job_id="bench", state=JobState.COMPLETED, raw_status="Completed", results_uri=f"s3://{BUCKET}/archive/model.tar.gz"
            )

            async def work() -> None:
                # fetch_outcome reads only the job's S3 client and result key.
                outcome = await fetch_outcome(SimpleNamespace(s3=s3, result_key=RESULT_KEY), status)
                assert outcome.ok and len(outcome.value) == size

        else:  # download-byoc-file
            figures["before_mib"] = rss_mib()

            async def work() -> None:
                await storage.download_file(s3, storage.S3Location(BUCKET, "archive/model.tar.gz"), path)

        _, figures["seconds"], figures["stall_ms"] = await _with_ticker(work)
    finally:
        await aws.close_clients()
    return figures


def _s3transfer(mode: str, url: str, path: str) -> dict:
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, **CREDENTIALS)
    figures = {"before_mib": rss_mib()}
    t0 = time.perf_counter()
    if mode == "upload-s3transfer-file":
        s3.upload_file(path, BUCKET, f"{mode}/object")
    else:
        s3.download_file(BUCKET, "archive/model.tar.gz", path)
    figures["seconds"] = time.perf_counter() - t0
    return figures


def child(mode: str, url: str, size: int, path: str) -> None:
    if "s3transfer" in mode:
        figures = _s3transfer(mode, url, path)
    else:
        figures = asyncio.run(_byoc(mode, url, size, path))
    figures["peak_mib"] = peak_mib()
    print(json.dumps(figures))


# -- the parent: set up, run each child, print --------------------------------------------------------


def _write_results_archive(directory: Path, size: int) -> Path:
    """A results archive holding a SIZE-byte return value, written as the job writes it."""
    import tarfile

    from byoc_executor.container import byoc_entry as contract

    results = directory / "results"
    results.mkdir()
    layout_file = results / contract.RESULT_FILE
    with tempfile.TemporaryFile(dir=directory) as body:
        # Written in 64 MiB slices, so that the parent never holds the value itself.
        length, digest = _pickle_bytes_in_slices(body, size)
        body.seek(0)
        with open(layout_file, "wb") as f:
            f.write(contract.envelope_head("result", length, digest, authenticate=contract.hmac_authenticator(RESULT_KEY)))
            while chunk := body.read(64 * MiB):
                f.write(chunk)
    archive = directory / "model.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(layout_file, arcname=contract.RESULT_FILE)
    layout_file.unlink()
    return archive


def _pickle_bytes_in_slices(out, size: int) -> tuple[int, str]:
    """The pickle of ``{"ok": True, "value": <size random bytes>}``, built without holding the bytes."""
    import hashlib
    import pickle
    import struct

    sha = hashlib.sha256()
    length = 0

    def put(data: bytes) -> None:
        nonlocal length
        sha.update(data)
        out.write(data)
        length += len(data)

    # PROTO 5, EMPTY_DICT, MARK, "ok" True, "value" BINBYTES8 <size> <data>, SETITEMS, STOP
    put(b"\x80\x05}(" + _short_str(b"ok") + pickle.NEWTRUE + _short_str(b"value") + b"\x8e" + struct.pack("<Q", size))
    remaining = size
    while remaining:
        n = min(64 * MiB, remaining)
        put(os.urandom(n))
        remaining -= n
    put(b"u.")
    return length, sha.hexdigest()


def _short_str(s: bytes) -> bytes:
    return b"\x8c" + bytes([len(s)]) + s


def run_child(mode: str, url: str, size: int, path: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--size", str(size), "--path", path],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> None:
    import boto3

    size = args.size_mib * MiB
    proc, url = start_emulator()
    scratch = Path(tempfile.mkdtemp(prefix="byoc-bench-transfer-"))
    rows = []
    try:
        s3 = boto3.client("s3", endpoint_url=url, **CREDENTIALS)
        s3.create_bucket(Bucket=BUCKET)
        data_file = scratch / "data"
        with open(data_file, "wb") as f:
            for _ in range(0, size, 64 * MiB):
                f.write(os.urandom(min(64 * MiB, size - f.tell())))
        archive = _write_results_archive(scratch, size)
        s3.upload_file(str(archive), BUCKET, "archive/model.tar.gz")
        archive_size = archive.stat().st_size
        archive.unlink()
        down = str(scratch / "downloaded")
        plan = [
            ("upload-byoc", "upload", "byoc: argument -> pickle -> multipart", str(data_file)),
            ("upload-byoc-file", "upload", "byoc: file -> multipart", str(data_file)),
            ("upload-s3transfer-file", "upload", "s3transfer: file (TransferManager)", str(data_file)),
            ("download-byoc", "download", "byoc: archive -> verify -> unpickle", down),
            ("download-byoc-file", "download", "byoc: archive -> file", down),
            ("download-s3transfer-file", "download", "s3transfer: archive -> file", down),
        ]
        for mode, direction, label, path in plan:
            figures = run_child(mode, url, size, path)
            nbytes = size if direction == "upload" else archive_size
            rows.append((direction, label, nbytes, figures))
            if os.path.exists(down):
                os.unlink(down)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"payload: {args.size_mib} MiB of random bytes; S3: moto inside the byoc-executor emulator on 127.0.0.1")
    print(f"{'':9} {'path':40} {'seconds':>8} {'MB/s':>7} {'RSS before':>11} {'peak RSS':>9} {'peak - before':>14} {'loop stall':>11}")
    for direction, label, nbytes, f in rows:
        stall = f"{f['stall_ms']:.0f} ms" if "stall_ms" in f else "-"
        extra = f"  (pickling {f['encode_s']:.1f} s)" if "encode_s" in f else ""
        print(
            f"{direction:9} {label:40} {f['seconds']:8.1f} {nbytes / f['seconds'] / 1e6:7.0f} {f['before_mib']:8.0f} MiB "
            f"{f['peak_mib']:6.0f} MiB {f['peak_mib'] - f['before_mib']:10.0f} MiB {stall:>11}{extra}"
        )
    print(f"memory target: peak under 1.3 x payload + 200 MiB = {1.3 * args.size_mib + 200:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    for name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_EC2_METADATA_DISABLED"]:
        del os.environ[name]
    if args.child:
        child(args.child, args.url, args.size, args.path)
    else:
        main(args)
