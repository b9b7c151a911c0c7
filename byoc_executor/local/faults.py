"""Fault injection for the local emulator: failed requests, and tampered jobs.

Request faults (:class:`FaultPlan`)
    A share of the clients' requests, per API, is answered with that API's real throttling error
    or a 500/503 instead of the service's answer. APIs are named by the service of the request's
    SigV4 credential scope (``s3``, ``braket``, ``sagemaker``, ``logs``, ``sts``); operations by
    their AWS names (``PutObject``, ``CreateJob``, ``CreateTrainingJob``, ``GetLogEvents``, ...).
    A rule may hold for a window of time only (``start``, ``duration``: every call fails for T
    seconds, an outage rather than a rate). A fault is injected in one of two modes:

    - ``before``: the request is refused without being processed (what throttling really does);
    - ``after``: the request IS processed, then its answer is replaced by a 500/503, as when a
      load balancer loses the answer of a CreateJob that succeeded. A client that retries must
      adopt what the first attempt did (clientToken, a job name derived from the electron).

    Decisions are reproducible: the n-th request of one (API, operation) draws from a random
    generator seeded with ``(seed, api, operation, n)``, so the same requests meet the same
    faults however concurrent clients interleave across operations. Counters of the requests
    seen and the faults injected, per API and operation, are kept for the tests.

Job faults (:class:`JobFaults`)
    Armed per job name, before the job exists or while it runs: ``delete-input`` removes the
    job's input-channel objects from S3 just before the job downloads them; ``delete``,
    ``truncate``, ``flip-byte`` and ``replace`` alter the job's uploaded ``model.tar.gz`` right
    after the upload and before the job reports a terminal state, so no client can have fetched
    the genuine archive first.

The emulator's own traffic is never faulted: its internal clients (``staging.AwsClients``: input
downloads, result uploads, log shipping, the tampering itself) send ``x-byoc-internal`` with a
secret drawn when the emulator is constructed; see ``server.py``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import tarfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping
from xml.sax.saxutils import escape

from botocore.exceptions import BotoCoreError, ClientError
from werkzeug.wrappers import Request, Response

from byoc_executor.local import s3_uris
from byoc_executor.local.validation import split_s3_uri

logger = logging.getLogger(__name__)

THROTTLE = "throttle"
INTERNAL_ERROR = "500"
UNAVAILABLE = "503"
KINDS = (THROTTLE, INTERNAL_ERROR, UNAVAILABLE)
BEFORE, AFTER, MIXED = "before", "after", "mixed"
MODES = (BEFORE, AFTER, MIXED)
_AFTER_SHARE = {BEFORE: 0.0, AFTER: 1.0, MIXED: 0.5}
DEFAULT_KINDS: Mapping[str, float] = {THROTTLE: 1.0, INTERNAL_ERROR: 1.0, UNAVAILABLE: 1.0}

# Each API's wire protocol and its own answers for each kind: (HTTP status, error code, message).
_PROTOCOLS = {"s3": "rest-xml", "braket": "rest-json", "sagemaker": "json", "logs": "json", "sts": "query"}
_GENERIC_ERRORS = {
    THROTTLE: (400, "ThrottlingException", "Rate exceeded"),
    INTERNAL_ERROR: (500, "InternalFailure", "The request processing has failed because of an unknown error."),
    UNAVAILABLE: (503, "ServiceUnavailable", "The service is unavailable. Please try again later."),
}
_ERRORS: dict[str, dict[str, tuple[int, str, str]]] = {
    # https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
    "s3": {
        THROTTLE: (503, "SlowDown", "Please reduce your request rate."),
        INTERNAL_ERROR: (500, "InternalError", "We encountered an internal error. Please try again."),
        UNAVAILABLE: (503, "ServiceUnavailable", "Service is unable to handle request."),
    },
    # botocore's braket model: ThrottlingException 429, InternalServiceException 500.
    "braket": {
        THROTTLE: (429, "ThrottlingException", "Rate exceeded"),
        INTERNAL_ERROR: (500, "InternalServiceException", "The request processing has failed because of an unknown error."),
        UNAVAILABLE: _GENERIC_ERRORS[UNAVAILABLE],
    },
    "sts": {**_GENERIC_ERRORS, THROTTLE: (400, "Throttling", "Rate exceeded")},
}


@dataclass(frozen=True)
class FaultRule:
    """How one API fails.

    Attributes:
        rate: the share of its requests that fail, in [0, 1].
        kinds: relative weights of ``throttle``, ``500`` and ``503``. An ``after`` fault is never
            a throttle (the request was served): it draws from the 5xx weights, or is a 500 if
            they are all zero.
        mode: ``before``, ``after``, or ``mixed`` (each fault is ``after`` with probability 1/2).
        operations: only these operations fail; empty means every operation of the API.
        start: seconds after the plan was installed before the rule applies (0: at once).
        duration: seconds the rule applies from ``start`` on (None: for as long as the plan is
            installed). With ``rate`` 1.0, a window: every call of the operations fails for
            ``duration`` seconds, as in an outage or a throttling burst that outlasts the
            clients' retries (not a rate, which retries get past).

    Raises:
        ValueError: a value is out of range or unknown.
    """

    rate: float
    kinds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_KINDS))
    mode: str = BEFORE
    operations: tuple[str, ...] = ()
    start: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        for name in ("start", "duration"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"a fault rule's {name} is a number of seconds >= 0, not {value!r}")

        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"a fault rate must be a number in [0, 1], not {self.rate!r}")
        if self.mode not in MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}: use one of {', '.join(MODES)}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}: use {', '.join(KINDS)}")
        if any(not isinstance(w, (int, float)) or w < 0 for w in self.kinds.values()) or not any(self.kinds.values()):
            raise ValueError(f"fault kind weights must be non-negative numbers, not all zero: {dict(self.kinds)}")
        object.__setattr__(self, "kinds", {k: float(w) for k, w in self.kinds.items()})
        object.__setattr__(self, "operations", tuple(self.operations))

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "kinds": dict(self.kinds), "mode": self.mode, "operations": list(self.operations),
                "start": self.start, "duration": self.duration}

    def applies_at(self, elapsed: float) -> bool:
        """Whether the rule is in force ``elapsed`` seconds after its plan was installed."""
        return elapsed >= self.start and (self.duration is None or elapsed < self.start + self.duration)


@dataclass(frozen=True)
class Fault:
    """One injected fault: which request, which answer, and whether the request was served first."""

    api: str
    operation: str
    kind: str
    mode: str

    def response(self, request: Request) -> Response:
        """The API's own error answer for this fault, in its wire protocol."""
        status, code, message = _ERRORS.get(self.api, _GENERIC_ERRORS)[self.kind]
        return error_response(self.api, status, code, message, request)


def error_response(api: str, status: int, code: str, message: str, request: Request) -> Response:
    """An AWS error answer in ``api``'s protocol (rest-xml, rest-json, json-1.1 or query)."""
    request_id = f"byoc-fault-{random.getrandbits(64):016x}"
    protocol = _PROTOCOLS.get(api, "json")
    headers = {"x-amzn-RequestId": request_id}
    if protocol == "rest-xml":
        headers["x-amz-request-id"] = request_id
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message><RequestId>{request_id}</RequestId></Error>"
        )
        # A HEAD answer has no body: clients read the error from the status alone.
        return Response("" if request.method == "HEAD" else body, status=status, headers=headers, content_type="application/xml")
    if protocol == "query":
        body = (
            f"<ErrorResponse><Error><Type>{'Sender' if status < 500 else 'Receiver'}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return Response(body, status=status, headers=headers, content_type="text/xml")
    if protocol == "rest-json":
        headers["x-amzn-ErrorType"] = code
        return Response(json.dumps({"message": message}), status=status, headers=headers, content_type="application/json")
    return Response(
        json.dumps({"__type": code, "message": message}), status=status, headers=headers, content_type="application/x-amz-json-1.1"
    )


class FaultPlan:
    """Which share of each API's requests fails, how, and the count of what was injected.

    Example::

        emulator.faults = FaultPlan({"s3": 0.1, "braket": 0.1}, seed=7, mode="mixed")
        ...
        emulator.faults.injected("braket", "CreateJob")   # faults injected on CreateJob so far

    Args:
        rules: API name -> a :class:`FaultRule`, or a bare rate (then ``mode`` and ``kinds``
            below apply to it).
        seed: the seed of every decision.
        mode: the mode of bare rates.
        kinds: the kind weights of bare rates.

    Raises:
        ValueError: a rate, mode or kind is out of range or unknown.
    """

    def __init__(
        self,
        rules: Mapping[str, FaultRule | float],
        seed: int = 0,
        mode: str = BEFORE,
        kinds: Mapping[str, float] | None = None,
    ):
        self.seed = int(seed)
        self.rules: dict[str, FaultRule] = {
            api: rule if isinstance(rule, FaultRule) else FaultRule(rule, dict(kinds or DEFAULT_KINDS), mode)
            for api, rule in rules.items()
        }
        self.installed = time.monotonic()
        """When the plan was made: the clock of the rules' ``start`` and ``duration``."""
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = defaultdict(int)
        self._injected: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))

    @classmethod
    def from_json(cls, data: Any) -> "FaultPlan":
        """A plan from ``{"rates": {api: rate}, "seed", "mode", "kinds", "rules": {api: {rate, kinds, mode, operations, start, duration}}}``.

        ``rates`` and ``rules`` may both be given; ``rules`` wins for an API named in both.

        Raises:
            ValueError: the document is malformed.
        """
        if not isinstance(data, dict):
            raise ValueError("a fault plan is a JSON object")
        unknown = set(data) - {"rates", "seed", "mode", "kinds", "rules"}
        if unknown:
            raise ValueError(f"unknown fault plan fields {sorted(unknown)}: use rates, seed, mode, kinds, rules")
        rates, rules = data.get("rates", {}), data.get("rules", {})
        if not isinstance(rates, dict) or not isinstance(rules, dict):
            raise ValueError("'rates' and 'rules' are JSON objects keyed by API name (s3, braket, sagemaker, logs, ...)")
        mode, kinds = data.get("mode", BEFORE), data.get("kinds") or dict(DEFAULT_KINDS)
        merged: dict[str, FaultRule | float] = dict(rates)
        for api, rule in rules.items():
            if not isinstance(rule, dict) or "rate" not in rule:
                raise ValueError(f"the rule for {api!r} must be an object with a 'rate'")
            extra = set(rule) - {"rate", "kinds", "mode", "operations", "start", "duration"}
            if extra:
                raise ValueError(f"unknown fields {sorted(extra)} in the rule for {api!r}")
            merged[api] = FaultRule(rule["rate"], rule.get("kinds") or dict(kinds), rule.get("mode", mode), tuple(rule.get("operations", ())),
                                    rule.get("start", 0.0), rule.get("duration"))
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"the seed must be an integer, not {seed!r}")
        return cls(merged, seed=seed, mode=mode, kinds=kinds)

    def decide(self, api: str, operation: str) -> Fault | None:
        """Count one request and decide its fate: a fault to inject, or None to serve it."""
        with self._lock:
            n = self._seen[(api, operation)]
            self._seen[(api, operation)] = n + 1
        rule = self.rules.get(api)
        if rule is None or rule.rate == 0 or (rule.operations and operation not in rule.operations):
            return None
        if not rule.applies_at(time.monotonic() - self.installed):
            return None
        draw = random.Random(f"{self.seed}/{api}/{operation}/{n}")
        if draw.random() >= rule.rate:
            return None
        mode = AFTER if draw.random() < _AFTER_SHARE[rule.mode] else BEFORE
        kinds = dict(rule.kinds)
        if mode == AFTER:
            kinds.pop(THROTTLE, None)
            if not any(kinds.values()):
                kinds = {INTERNAL_ERROR: 1.0}
        names = sorted(kinds)
        kind = draw.choices(names, weights=[kinds[k] for k in names])[0]
        with self._lock:
            counts = self._injected[(api, operation)]
            for key in ("total", mode, kind):
                counts[key] += 1
        return Fault(api, operation, kind, mode)

    def injected(self, api: str | None = None, operation: str | None = None, mode: str | None = None) -> int:
        """How many faults were injected, optionally for one API, one operation, and one mode."""
        with self._lock:
            return sum(
                counts[mode or "total"]
                for (a, o), counts in self._injected.items()
                if (api is None or a == api) and (operation is None or o == operation)
            )

    def seen(self, api: str | None = None, operation: str | None = None) -> int:
        """How many client requests were seen (faulted or not)."""
        with self._lock:
            return sum(n for (a, o), n in self._seen.items() if (api is None or a == api) and (operation is None or o == operation))

    def to_json(self) -> dict[str, Any]:
        """The plan and its counters: ``{"seed", "rules", "seen": {api: {op: n}}, "injected": {api: {op: {total, before, after, throttle, 500, 503}}}}``."""
        with self._lock:
            seen: dict[str, dict[str, int]] = defaultdict(dict)
            for (api, op), n in sorted(self._seen.items()):
                seen[api][op] = n
            injected: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
            for (api, op), counts in sorted(self._injected.items()):
                injected[api][op] = dict(counts)
        return {
            "seed": self.seed,
            "rules": {api: rule.to_json() for api, rule in self.rules.items()},
            "seen": dict(seen),
            "injected": dict(injected),
        }


# --- job faults ------------------------------------------------------------------------------------

DELETE_INPUT = "delete-input"
RESULT_ACTIONS = ("delete", "truncate", "flip-byte", "replace")
JOB_ACTIONS = (DELETE_INPUT, *RESULT_ACTIONS)


@dataclass(frozen=True)
class JobFault:
    """One armed fault of a job.

    Attributes:
        action: ``delete-input``, or what to do to ``model.tar.gz``: ``delete``; ``truncate``
            (keep ``length`` bytes, default half); ``flip-byte`` (invert the byte at ``offset``,
            default the middle one); ``replace`` (with ``body``, base64).
        member: ``truncate`` and ``flip-byte`` only: apply the change to this file inside the
            archive (e.g. ``result.byoc``) and re-pack the archive, instead of to the archive's bytes.
        offset: ``flip-byte``: the byte's index (negative counts from the end).
        length: ``truncate``: how many bytes to keep.
        body: ``replace``: the new archive's bytes.

    Raises:
        ValueError: an unknown action or a malformed option.
    """

    action: str
    member: str | None = None
    offset: int | None = None
    length: int | None = None
    body: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.action not in JOB_ACTIONS:
            raise ValueError(f"unknown job fault {self.action!r}: use one of {', '.join(JOB_ACTIONS)}")
        if self.action == "replace" and self.body is None:
            raise ValueError("'replace' needs the new archive as 'body' (base64)")
        if self.member is not None and self.action not in ("truncate", "flip-byte"):
            raise ValueError(f"'member' applies to truncate and flip-byte, not {self.action}")
        for name in ("offset", "length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"'{name}' must be an integer, not {value!r}")
        if self.length is not None and self.length < 0:
            raise ValueError(f"'length' must be >= 0, not {self.length}")

    @classmethod
    def from_json(cls, data: Any) -> "JobFault":
        """From ``{"action": ..., "member"?, "offset"?, "length"?, "body"? (base64)}``.

        Raises:
            ValueError: the document is malformed.
        """
        if not isinstance(data, dict) or "action" not in data:
            raise ValueError(f'a job fault is a JSON object with an "action" ({", ".join(JOB_ACTIONS)})')
        unknown = set(data) - {"action", "member", "offset", "length", "body"}
        if unknown:
            raise ValueError(f"unknown job fault fields {sorted(unknown)}")
        body = data.get("body")
        if body is not None:
            try:
                body = base64.b64decode(body, validate=True)
            except (ValueError, TypeError) as e:
                raise ValueError(f"'body' is not valid base64: {e}") from e
        return cls(data["action"], data.get("member"), data.get("offset"), data.get("length"), body)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        for name in ("member", "offset", "length"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.body is not None:
            out["body_bytes"] = len(self.body)
        return out

    def alter(self, archive: bytes) -> tuple[bytes, str]:
        """The tampered archive and a line saying what changed (not for ``delete``/``delete-input``).

        Raises:
            ValueError: the member is not in the archive, or the offset is outside the data.
        """
        if self.action == "replace":
            return self.body or b"", f"replaced the archive ({len(archive)} bytes) with {len(self.body or b'')} bytes"
        if self.member is None:
            return self._change(archive, "the archive")
        return _rewrite_member(archive, self.member, lambda data: self._change(data, self.member or ""))

    def _change(self, data: bytes, what: str) -> tuple[bytes, str]:
        if self.action == "truncate":
            keep = len(data) // 2 if self.length is None else min(self.length, len(data))
            return data[:keep], f"truncated {what} from {len(data)} to {keep} bytes"
        if not data:
            raise ValueError(f"{what} is empty: no byte to flip")
        index = len(data) // 2 if self.offset is None else self.offset
        if not -len(data) <= index < len(data):
            raise ValueError(f"offset {index} is outside {what} ({len(data)} bytes)")
        index %= len(data)
        flipped = bytearray(data)
        flipped[index] ^= 0xFF
        return bytes(flipped), f"flipped byte {index} of {what} ({data[index]:#04x} -> {flipped[index]:#04x})"


def _rewrite_member(archive: bytes, member: str, change: Any) -> tuple[bytes, str]:
    """Re-pack a gzipped tar with ``change(data) -> (data, note)`` applied to one member."""
    out = io.BytesIO()
    note = None
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if data is not None and info.name.removeprefix("./") == member:
                data, note = change(data)
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    if note is None:
        raise ValueError(f"the archive has no member {member!r}")
    return out.getvalue(), note


class TooLate(Exception):
    """The job is past the point where the fault would apply."""


class JobFaults:
    """Faults armed per job name, applied by the job's lifecycle at two points.

    The job calls :meth:`before_download` just before it copies its input channels and
    :meth:`after_upload` right after it uploaded ``model.tar.gz`` (both on its own thread, before
    it reports a terminal state). Arming a fault for a point the job has passed raises
    :class:`TooLate`, so an accepted fault is always applied (unless the job never reaches the
    point: stopped, or no upload). Job names are shared by the two services here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, list[JobFault]] = defaultdict(list)
        self._passed: dict[str, set[str]] = defaultdict(set)
        self._applied: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def arm(self, job_name: str, fault: JobFault) -> list[dict[str, Any]]:
        """Arm ``fault`` for the job called ``job_name`` (which may not exist yet).

        Returns:
            Every fault now armed for that job.

        Raises:
            TooLate: the job has already downloaded its inputs (``delete-input``) or uploaded its
                results (the other actions).
        """
        point = "download" if fault.action == DELETE_INPUT else "upload"
        with self._lock:
            if point in self._passed[job_name]:
                raise TooLate(f"job {job_name} has already passed its {point}: {fault.action} would not apply")
            self._armed[job_name].append(fault)
            return [f.to_json() for f in self._armed[job_name]]

    def clear(self) -> None:
        """Disarm everything and forget what was applied."""
        with self._lock:
            self._armed.clear()
            self._applied.clear()

    def report(self) -> dict[str, Any]:
        """``{job name: {"armed": [...], "applied": [{action, uri, detail}]}}``."""
        with self._lock:
            names = sorted(set(self._armed) | set(self._applied))
            return {
                n: {"armed": [f.to_json() for f in self._armed.get(n, [])], "applied": list(self._applied.get(n, []))}
                for n in names
            }

    def applied(self, job_name: str) -> list[dict[str, Any]]:
        """What was done to the job, in order."""
        with self._lock:
            return list(self._applied.get(job_name, []))

    def _take(self, job_name: str, point: str) -> list[JobFault]:
        with self._lock:
            self._passed[job_name].add(point)
            armed = self._armed.get(job_name, [])
            taken = [f for f in armed if (f.action == DELETE_INPUT) == (point == "download")]
            self._armed[job_name] = [f for f in armed if f not in taken]
            return taken

    def _record(self, job_name: str, fault: JobFault, uri: str, detail: str) -> None:
        logger.info("job fault on %s: %s", job_name, detail)
        with self._lock:
            self._applied[job_name].append({"action": fault.action, "uri": uri, "detail": detail})

    def before_download(self, job: Any) -> None:
        """Apply ``delete-input``: remove every object under the job's input channels."""
        for fault in self._take(job.name, "download"):
            s3 = job.context.clients.client("s3", job.region)
            for uri in job.channels().values():
                bucket, raw_prefix = s3_uris.to_s3_uri(uri).removeprefix("s3://").partition("/")[::2]
                try:
                    keys = [
                        o["Key"]
                        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=raw_prefix)
                        for o in page.get("Contents", [])
                    ]
                    for key in keys:
                        s3.delete_object(Bucket=bucket, Key=key)
                    detail = f"deleted {len(keys)} input object(s) under {uri}"
                except (ClientError, BotoCoreError) as e:
                    detail = f"could not delete the inputs under {uri}: {e}"
                self._record(job.name, fault, uri, detail)

    def after_upload(self, job: Any) -> None:
        """Apply the armed result faults to the job's freshly uploaded ``model.tar.gz``."""
        faults = self._take(job.name, "upload")
        if not faults:
            return
        s3 = job.context.clients.client("s3", job.region)
        uri = job.artifact_uri()
        bucket, key = split_s3_uri(uri)
        for fault in faults:
            try:
                if fault.action == "delete":
                    s3.delete_object(Bucket=bucket, Key=key)
                    detail = f"deleted {uri}"
                else:
                    archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    altered, detail = fault.alter(archive)
                    s3.put_object(Bucket=bucket, Key=key, Body=altered)
            except (ClientError, BotoCoreError, ValueError, tarfile.TarError) as e:
                detail = f"could not {fault.action} {uri}: {type(e).__name__}: {e}"
            self._record(job.name, fault, uri, detail)
