"""S3 locations as the job APIs accept them: ``s3://bucket/key`` and ``https://`` S3 URLs.

Sources:
- botocore models: Braket ``S3Path`` and SageMaker ``S3Uri`` both have the pattern
  ``(https|s3)://([^/]+)/?(.*)``: an https URL is as valid as an s3:// URI to the model.
- Amazon S3 user guide, "Virtual hosting of buckets" and "Methods for accessing a bucket": a
  bucket is reached as ``https://<bucket>.s3.<region>.amazonaws.com/<key>`` (virtual-hosted style;
  also ``<bucket>.s3.amazonaws.com`` and ``<bucket>.s3-<region>.amazonaws.com``) or
  ``https://s3.<region>.amazonaws.com/<bucket>/<key>`` (path style).
- Amazon S3 user guide, "General purpose bucket naming rules": 3 to 63 characters, lowercase
  letters, digits, dots and hyphens, beginning and ending with a letter or digit.

What the services do with an https URL whose host is not an S3 endpoint is unconfirmed; the
emulator refuses it at creation (it could not find the data), which fails safe.
"""

from __future__ import annotations

import re

BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3 = re.compile(r"s3://(?P<bucket>[^/]+)(?:/(?P<key>.*))?", re.DOTALL)
_VIRTUAL = re.compile(r"https://(?P<bucket>[^/]+)\.s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com(?:/(?P<key>.*))?", re.DOTALL)
_PATH = re.compile(r"https://s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com/(?P<bucket>[^/]+)(?:/(?P<key>.*))?", re.DOTALL)


def parse(uri: str) -> tuple[str, str] | None:
    """``(bucket, key)`` of an s3:// URI or an https S3 URL (key without its leading slash); None if neither."""
    if not isinstance(uri, str):
        return None
    for pattern in (_S3, _PATH, _VIRTUAL):
        match = pattern.fullmatch(uri)
        if match is not None and BUCKET.fullmatch(match.group("bucket")):
            return match.group("bucket"), match.group("key") or ""
    return None


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``: no leading or trailing slash on the key.

    Raises:
        ValueError: not an S3 location.
    """
    parsed = parse(uri)
    if parsed is None:
        raise ValueError(f"not an S3 location: {uri!r}")
    return parsed[0], parsed[1].strip("/")


def to_s3_uri(uri: str) -> str:
    """The ``s3://bucket/key`` form of any S3 location (an https URL rewritten, trailing slash kept).

    Raises:
        ValueError: not an S3 location.
    """
    parsed = parse(uri)
    if parsed is None:
        raise ValueError(f"not an S3 location: {uri!r}")
    return f"s3://{parsed[0]}/{parsed[1]}"
