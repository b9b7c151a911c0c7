"""Which AWS operation a client request asks for, from its wire shape alone.

The emulator's request hooks and fault plans (``faults.py``) key on operation names as AWS spells
them: ``PutObject``, ``CreateJob``, ``DescribeTrainingJob``, ``GetLogEvents``, ``GetCallerIdentity``.
json protocols name the operation in ``X-Amz-Target``, query protocols (STS) in the ``Action``
field, S3 and Braket (rest protocols) by method, path and query string.
"""

from __future__ import annotations

import io
from urllib.parse import parse_qs

from werkzeug.wrappers import Request


def raw_path(request: Request) -> str:
    """The request's path as sent (still percent-encoded), without the query."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    return raw.split("?", 1)[0]


def braket_operation(request: Request) -> str | None:
    """The Braket operation of a request, from its method and path (None: not one the emulator serves)."""
    path, method = raw_path(request), request.method
    if method == "POST" and path == "/job":
        return "CreateJob"
    if method == "POST" and path == "/jobs":
        return "SearchJobs"
    if method == "PUT" and path.startswith("/job/") and path.endswith("/cancel"):
        return "CancelJob"
    if method == "GET" and path.startswith("/job/"):
        return "GetJob"
    if method == "POST" and path == "/quantum-task":
        return "CreateQuantumTask"
    if method == "PUT" and path.startswith("/quantum-task/") and path.endswith("/cancel"):
        return "CancelQuantumTask"
    if method == "GET" and path.startswith("/quantum-task/"):
        return "GetQuantumTask"
    if method == "POST" and path == "/quantum-tasks":
        return "SearchQuantumTasks"
    if method == "GET" and path.startswith("/device/"):
        return "GetDevice"
    if method == "POST" and path == "/devices":
        return "SearchDevices"
    if path.startswith("/tags/"):
        return {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}.get(method)
    return None


def s3_operation(request: Request) -> str:
    """The S3 operation of a path-style request (what the emulator's clients send to its IP endpoint)."""
    named = request.args.get("x-id")  # botocore names some operations in the query string
    if named:
        return named
    bucket, _, key = request.path.lstrip("/").partition("/")
    method, args, copy = request.method, request.args, "x-amz-copy-source" in request.headers
    if not bucket:
        return "ListBuckets"
    if key:
        if method == "GET":
            return "GetObjectTagging" if "tagging" in args else "ListParts" if "uploadId" in args else "GetObject"
        if method == "HEAD":
            return "HeadObject"
        if method == "PUT":
            if "partNumber" in args:
                return "UploadPartCopy" if copy else "UploadPart"
            return "PutObjectTagging" if "tagging" in args else "CopyObject" if copy else "PutObject"
        if method == "POST" and "uploads" in args:
            return "CreateMultipartUpload"
        if method == "POST" and "uploadId" in args:
            return "CompleteMultipartUpload"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in args else "DeleteObject"
        return f"{method} object"
    if method == "GET":
        if args.get("list-type") == "2":
            return "ListObjectsV2"
        for arg, name in (("location", "GetBucketLocation"), ("uploads", "ListMultipartUploads"), ("versions", "ListObjectVersions")):
            if arg in args:
                return name
        return "ListObjects" if not args or "prefix" in args or "marker" in args else f"GetBucket{_first_arg(request)}"
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        return "CreateBucket" if not args else f"PutBucket{_first_arg(request)}"
    if method == "DELETE":
        return "DeleteBucket" if not args else f"DeleteBucket{_first_arg(request)}"
    if method == "POST" and "delete" in args:
        return "DeleteObjects"
    return f"{method} bucket"


def _first_arg(request: Request) -> str:
    return next(iter(request.args)).title().replace("-", "")


def operation_name(service: str, request: Request) -> str:
    """The AWS operation a client request asks for: ``PutObject``, ``CreateJob``, ``GetLogEvents``, ...

    json protocols name it in ``X-Amz-Target``; query protocols (STS) in the ``Action`` form field,
    which is read here and put back for the service; S3 and Braket by method and path.
    """
    if service == "braket":
        return braket_operation(request) or f"{request.method} {raw_path(request)}"
    target = request.headers.get("X-Amz-Target")
    if target:
        return target.split(".")[-1]
    if service == "s3":
        return s3_operation(request)
    action = request.args.get("Action")
    if action is None and request.mimetype == "application/x-www-form-urlencoded":
        data = request.get_data(cache=True)
        request.environ["wsgi.input"] = io.BytesIO(data)  # the service reads the body again
        action = (parse_qs(data.decode("utf-8", "replace")).get("Action") or [None])[0]
    return action or f"{request.method} {request.path}"
