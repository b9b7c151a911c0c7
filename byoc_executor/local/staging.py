"""The emulator's own traffic to S3: input channels in, model artifacts out.

The emulator reaches its in-process moto backend the way a job would: plain boto3 clients over
HTTP to its own loopback endpoint. boto3 clients are thread-safe, so one client per service and
region is shared by every job thread.

Every request of these clients carries :data:`INTERNAL_HEADER` with the emulator's secret: the
server never injects faults into (or hooks) a request that has it, so the emulator's own work
(input downloads, result uploads, log shipping) never fails because a test made the clients' requests fail.
"""

from __future__ import annotations

import json
import tarfile
import threading
from pathlib import Path
from typing import Any, Sequence

import boto3.exceptions
import boto3.session
import botocore.config
from botocore.exceptions import ClientError

from byoc_executor.local import s3_uris
from byoc_executor.local.validation import split_s3_uri

DUMMY_ACCESS_KEY = "byoc-local"
DUMMY_SECRET_KEY = "byoc-local-secret"
INTERNAL_HEADER = "x-byoc-internal"

_CLIENT_CONFIG = botocore.config.Config(
    s3={"addressing_style": "path"},  # path-style: the endpoint is an IP address, buckets may be "job"
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    read_timeout=60,
)


class StagingError(Exception):
    """Moving a job's data to or from S3 failed; the message is the job's failure reason."""


class AwsClients:
    """boto3 clients to the emulator's own endpoint, created once per (service, region).

    Args:
        endpoint_url: the emulator's URL.
        internal_token: sent as :data:`INTERNAL_HEADER` on every request (after signing), so the
            server knows the request is its own; None sends nothing.
    """

    def __init__(self, endpoint_url: str, internal_token: str | None = None):
        self.endpoint_url = endpoint_url
        self._internal_token = internal_token
        self._session = boto3.session.Session(
            aws_access_key_id=DUMMY_ACCESS_KEY, aws_secret_access_key=DUMMY_SECRET_KEY
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str) -> Any:
        """The shared client for ``service`` in ``region``."""
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                client = self._session.client(service, region_name=region, endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)
                if self._internal_token is not None:
                    client.meta.events.register("before-send", self._mark_internal)
                self._clients[key] = client
            return self._clients[key]

    def _mark_internal(self, request: Any, **kwargs: Any) -> None:
        request.headers[INTERNAL_HEADER] = self._internal_token


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "Unknown")


def download_prefix(s3: Any, uri: str, dest: Path, allow_empty: bool = False) -> int:
    """Copy every object under the S3 prefix ``uri`` into ``dest`` (SageMaker File mode).

    Keys keep their path relative to the prefix; a prefix that names a single object lands as
    that object's base name. Returns the number of objects copied.

    Args:
        allow_empty: an empty prefix is not an error (checkpoints: the first run has none).

    Raises:
        StagingError: the bucket is missing or unreadable, or nothing matches the prefix (unless
            ``allow_empty``).
    """
    bucket, prefix = split_s3_uri(uri)
    raw_prefix = s3_uris.to_s3_uri(uri).removeprefix("s3://").partition("/")[2]  # keep a trailing slash if given
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    count = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=raw_prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue  # a "folder" marker, not data
                relative = key[len(prefix):].lstrip("/") if prefix else key
                target = (dest / (relative or Path(key).name)).resolve()
                if not target.is_relative_to(root):
                    raise StagingError(f"ClientError: S3 key {key!r} would land outside the channel directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(target))
                count += 1
    except ClientError as e:
        raise StagingError(f"ClientError: Data download failed: cannot read {uri}: {_error_code(e)}") from e
    if count == 0 and not allow_empty:
        raise StagingError(f"ClientError: Data download failed: No S3 objects found under S3 URL \"{uri}\".")
    return count


def upload_results(s3: Any, results_dir: "Path | Sequence[Path]", uri: str, scratch: Path) -> None:
    """Tar and gzip the contents of ``results_dir`` (files at the archive root) to ``uri``.

    Several directories (one per host) are aggregated into the one archive; an entry name found
    in several is taken from the last directory that has it.

    Raises:
        StagingError: the bucket is missing or the upload was refused.
    """
    archive = scratch / "model.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Path] = {}
    for directory in [results_dir] if isinstance(results_dir, Path) else results_dir:
        if directory.is_dir():
            entries.update({entry.name: entry for entry in directory.iterdir()})
    # gzip's fastest level: readers see the same archive format, and a large result is not held
    # up for seconds of compression (what level the services use is not documented).
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name in sorted(entries):
            tar.add(entries[name], arcname=name)
    bucket, key = split_s3_uri(uri)
    try:
        s3.upload_file(str(archive), bucket, key)
    except ClientError as e:
        raise StagingError(f"ClientError: could not upload the model artifacts to {uri}: {_error_code(e)}") from e
    except boto3.exceptions.S3UploadFailedError as e:  # upload_file wraps ClientError in this
        raise StagingError(f"ClientError: could not upload the model artifacts to {uri}: {e}") from e


def upload_tree(s3: Any, directory: Path, uri: str) -> int:
    """Copy every file under ``directory`` to the S3 prefix ``uri`` (relative paths kept).

    Returns the number of files uploaded.

    Raises:
        StagingError: the bucket is missing or an upload was refused.
    """
    bucket, prefix = split_s3_uri(uri)
    count = 0
    if not directory.is_dir():
        return 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        key = f"{prefix.rstrip('/')}/{relative}" if prefix else relative
        try:
            s3.upload_file(str(path), bucket, key)
        except (ClientError, boto3.exceptions.S3UploadFailedError) as e:
            raise StagingError(f"ClientError: could not upload {relative} to {uri}: {e}") from e
        count += 1
    return count


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
