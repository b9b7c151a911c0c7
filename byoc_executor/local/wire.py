"""AWS's wire conventions that every answer of the emulator keeps, whichever part answers.

Sources:
- Request ids: AWS json and rest-json services answer ``x-amzn-RequestId`` on every response
  (botocore's parsers read it into ``ResponseMetadata.RequestId``: ``botocore/parsers.py``
  ``BaseJSONParser._do_error_parse``/``_parse_header_map``; S3 uses ``x-amz-request-id``).
- Error bodies, one per protocol (botocore ``parsers.py``: ``BaseJSONParser`` reads ``__type``
  and ``message``; ``BaseRestParser``/``RestJSONParser`` read the code from the
  ``x-amzn-ErrorType`` header, else from the body; ``QueryParser`` reads
  ``<ErrorResponse><Error><Code>``; ``RestXMLParser`` reads ``<Error><Code>``). An answer a client
  cannot parse as its protocol's error (moto's plain-text 500 for an operation it lacks) makes
  botocore raise ``ResponseParserError`` instead of a ``ClientError``, which clients do not catch.
- Codes: ``InternalFailure`` (500) and ``UnknownOperationException`` (404 in rest protocols,
  400 in json) are AWS's common errors ("Common Errors" in every service's API reference).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-amzn-RequestId"
PROTOCOLS = {
    "braket": "rest-json",
    "sagemaker": "json",
    "logs": "json",
    "sts": "query",
    "iam": "query",
    "s3": "rest-xml",
    "ecr": "json",
}
"""The protocol of each service a client may send here (botocore models' ``metadata.protocol``)."""


def new_request_id() -> str:
    """A request id shaped like AWS's (a UUID)."""
    return str(uuid.uuid4())


def error_body(protocol: str, code: str, message: str, request_id: str) -> tuple[bytes, str, list[tuple[str, str]]]:
    """(body, content type, extra headers) of an error in ``protocol``."""
    if protocol == "json":
        return json.dumps({"__type": code, "message": message}).encode(), "application/x-amz-json-1.1", []
    if protocol == "rest-json":
        return json.dumps({"message": message}).encode(), "application/json", [("x-amzn-ErrorType", code)]
    if protocol == "query":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return body.encode(), "text/xml", []
    body = f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message><RequestId>{request_id}</RequestId></Error>"
    return body.encode(), "application/xml", []


def error_app(service: str | None, code: str, message: str, status: int) -> Callable:
    """A WSGI application that answers one AWS-shaped error for ``service``."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        request_id = new_request_id()
        body, content_type, extra = error_body(PROTOCOLS.get(service or "", "rest-json"), code, message, request_id)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), (REQUEST_ID_HEADER, request_id), *extra]
        start_response(f"{status} ERROR", headers)
        return [body]

    return app


def _is_aws_shaped(headers: list[tuple[str, str]], body: bytes) -> bool:
    """Whether an error answer carries a code a botocore parser can read."""
    names = {k.lower(): v for k, v in headers}
    if "x-amzn-errortype" in names:
        return True
    text = body.lstrip()[:4096]
    if text.startswith(b"{"):
        try:
            decoded = json.loads(body)
        except ValueError:
            return False
        return isinstance(decoded, dict) and any(k in decoded for k in ("__type", "code", "Code"))
    return text.startswith(b"<") and b"<Code>" in text


def conform(app: Callable, service: str | None) -> Callable:
    """Wrap a WSGI application so that every answer has a request id and every 5xx error is AWS-shaped.

    Answers are buffered (the emulator's answers are small; S3 object bodies pass through as
    they are, only their headers are added to).
    """

    def wrapped(environ: dict, start_response: Callable) -> Iterable[bytes]:
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            captured[:] = [status, list(headers)]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        try:
            result = app(environ, capture)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except NotImplementedError as e:  # moto lacks the operation: a client error, not to be retried
            log.info("not implemented here: %s", e)
            return error_app(service, "UnknownOperationException", f"The emulator does not implement this operation: {e}", 400)(environ, start_response)
        except Exception as e:  # a bug in the emulator or moto: still an answer the client can parse
            log.exception("the emulator failed on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return error_app(service, "InternalFailure", f"The emulator failed on this request: {type(e).__name__}", 500)(environ, start_response)
        status, headers = captured
        code = int(status.split(" ", 1)[0])
        body = b"".join(chunks)
        if code >= 500 and not _is_aws_shaped(headers, body):
            text = body.decode("utf-8", "replace").strip()[:500] or status
            return error_app(service, "InternalFailure", f"The emulator cannot serve this request: {text}", 500)(environ, start_response)
        if not any(k.lower() == REQUEST_ID_HEADER.lower() for k, _ in headers):
            headers.append((REQUEST_ID_HEADER, new_request_id()))
        if environ.get("REQUEST_METHOD") != "HEAD":  # a HEAD answer's length is the object's, not its empty body's
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [body]

    return wrapped
