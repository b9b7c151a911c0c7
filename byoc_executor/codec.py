"""The client's half of the envelope format defined in ``container/byoc_entry.py``.

Pickling and unpickling are CPU work: callers run them in a worker thread so the Covalent
server's event loop never stalls on a large argument or result.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import ResultError, TaskEncodingError

_COPY_CHUNK = 1024 * 1024


SPOOL_LIMIT = 16 * 1024 * 1024
"""A payload up to this size stays in memory (it goes to S3 in one request); a larger one spills to
a temporary file as it is pickled, and is uploaded from there in parts."""


class _Spool:
    """A write-only file that keeps up to ``limit`` bytes in memory, then moves to a temporary file."""

    def __init__(self, limit: int):
        self.limit = limit
        self.memory: io.BytesIO | None = io.BytesIO()
        self.path: str | None = None
        self._file: Any = None

    def write(self, data: Any) -> int:
        if self.memory is not None and self.memory.tell() + memoryview(data).nbytes > self.limit:
            fd, self.path = tempfile.mkstemp(prefix="byoc-payload-", suffix=".body")
            self._file = os.fdopen(fd, "wb")
            self._file.write(self.memory.getbuffer())
            self.memory = None
        return (self._file or self.memory).write(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


@dataclass
class EncodedTask:
    """A payload envelope, and what the job needs to verify it.

    The envelope is ``head`` followed by the body, which is either in memory (``body``) or, when
    large, in a temporary file (``body_path``) that ``discard()`` deletes. The header holds
    ``result_key``, the task's fresh HMAC key for its result; its canonical digest
    (``header_digest``) goes to the job in its request, which pins the payload. The key is known
    only to readers of the payload object (see README, threat model).
    """

    head: bytes
    body: bytes | None
    body_path: str | None
    body_length: int
    body_sha256: str
    header_digest: str
    result_key: str = field(repr=False)

    @property
    def size(self) -> int:
        """The envelope's size in bytes."""
        return len(self.head) + self.body_length

    def pieces(self) -> list[bytes | str]:
        """The envelope as the pieces to upload one after the other (bytes, or a file's path)."""
        return [self.head, self.body if self.body is not None else self.body_path]  # type: ignore[list-item]

    def envelope_bytes(self) -> bytes:
        """The whole envelope in memory: for small payloads and tests."""
        if self.body is not None:
            return self.head + self.body
        return self.head + Path(self.body_path).read_bytes()  # type: ignore[arg-type]

    def discard(self) -> None:
        """Let go of the body (in memory or in a temporary file). Safe to call more than once."""
        self.body = None
        if self.body_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.body_path)

    def hyperparameters(self) -> dict[str, str]:
        """What the job needs to verify this payload (no secret: the job's description shows them)."""
        return {
            contract.HP_PROTOCOL: str(contract.PROTOCOL_VERSION),
            contract.HP_PAYLOAD_DIGEST: self.header_digest,
        }


def encode_task(function: Any, args: list, kwargs: dict, spool_limit: int = SPOOL_LIMIT) -> EncodedTask:
    """Pickle the electron into a payload envelope that carries a fresh result key.

    The pickle is streamed: a large argument is written to a temporary file as it is pickled
    (``EncodedTask.body_path``), never copied whole into memory. The caller must ``discard()``.

    Raises:
        TaskEncodingError: the function or an argument cannot be pickled; says which.
    """
    spool = _Spool(spool_limit)
    try:
        length, digest = contract.pickle_to({"function": function, "args": args, "kwargs": kwargs}, spool)
    except Exception as e:  # cloudpickle raises many types (PicklingError, TypeError, ...)
        spool.discard()
        culprit = _find_unpicklable(function, args, kwargs)
        raise TaskEncodingError(
            f"cannot pickle the electron's {culprit} with cloudpickle: {type(e).__name__}: {e}. "
            "Objects such as open files, locks, sockets and live clients cannot travel to a job: "
            "create them inside the electron instead."
        ) from e
    except BaseException:
        spool.discard()
        raise
    spool.close()
    result_key = secrets.token_hex(32)
    header = contract.make_header("payload", length, digest, extra={contract.RESULT_KEY_FIELD: result_key})
    body = spool.memory.getvalue() if spool.memory is not None else None
    return EncodedTask(contract.head_bytes(header), body, spool.path, length, digest, contract.header_digest(header), result_key)


def encode_group(dispatch_id: str, tasks: list[dict], inputs: dict[int, bytes]) -> EncodedTask:
    """A task group's payload: Covalent's serialized assets, to be run in order in one job.

    Args:
        dispatch_id: the dispatch the group belongs to.
        tasks: in the order to run them, ``{"node_id": int, "function": bytes, "hooks": bytes,
            "args": [node id, ...], "kwargs": {name: node id}}``, the bytes being Covalent's own
            serialized node assets (never unpickled here).
        inputs: the outputs of nodes outside the group that the tasks read, by node id.
    """
    body = cloudpickle.dumps({"dispatch_id": dispatch_id, "tasks": tasks, "inputs": inputs})
    result_key = secrets.token_hex(32)
    header = contract.make_header(
        "payload", len(body), hashlib.sha256(body).hexdigest(),
        extra={contract.RESULT_KEY_FIELD: result_key, contract.JOB_FIELD: contract.JOB_GROUP},
    )
    return EncodedTask(contract.head_bytes(header), body, None, len(body), header["body_sha256"], contract.header_digest(header), result_key)


def _find_unpicklable(function: Any, args: list, kwargs: dict) -> str:
    candidates = [("function", function)]
    candidates += [(f"argument {i}", a) for i, a in enumerate(args)]
    candidates += [(f"keyword argument '{k}'", v) for k, v in kwargs.items()]
    for name, value in candidates:
        try:
            cloudpickle.dumps(value)
        except Exception:
            return name
    return "function or arguments"


@dataclass
class JobOutcome:
    """What the job's results archive held."""

    ok: bool
    value: Any = None
    exception: dict | None = None
    stdout: str = ""
    stderr: str = ""
    has_result: bool = True
    """False when the job died before writing its result: the archive held only what it printed
    (unauthenticated, unlike the output inside a result)."""
    tasks: list[dict] | None = None
    """A task group's: per task, in order, ``{"node_id", "status" ("COMPLETED", "FAILED" or
    "NOT_RUN"), "output" (Covalent's serialized output, bytes, or None), "exception", "stdout",
    "stderr"}``."""


def read_results_archive(archive: bytes | str, result_key: str) -> JobOutcome:
    """Verify and unpack a job's ``model.tar.gz``: the result envelope and the captured output.

    The archive is read once, as a stream; the result envelope is unpacked to a temporary file,
    verified there in chunks and unpickled from it, so a large result is held in memory only as
    the value itself.

    Args:
        archive: the archive's bytes, or a path to it.
        result_key: the task's HMAC key (``EncodedTask.result_key``); a result without a valid
            MAC under it is refused before anything is unpickled.

    Returns:
        The outcome; ``has_result`` is False when the archive holds no result envelope (the job
        died before writing one), with whatever the task printed until then.

    Raises:
        ResultError: the archive or the envelope is unreadable, truncated, altered, or written by
            other versions. Nothing is unpickled unless every check passed.
    """
    fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")
    texts: dict[str, str] = {}
    with tempfile.TemporaryFile(prefix="byoc-result-") as envelope:
        found = False
        try:
            with fileobj, tarfile.open(fileobj=fileobj, mode="r|*") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if not member.isfile() or name not in (contract.RESULT_FILE, contract.STDOUT_FILE, contract.STDERR_FILE):
                        continue
                    source = tar.extractfile(member)
                    if name == contract.RESULT_FILE:
                        shutil.copyfileobj(source, envelope, _COPY_CHUNK)  # type: ignore[misc]
                        found = True
                    else:
                        texts[name] = source.read().decode("utf-8", "replace")  # type: ignore[union-attr]
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ResultError(f"the job's results archive is unreadable: {type(e).__name__}: {e}") from e
        if not found:
            return JobOutcome(
                ok=False, stdout=texts.get(contract.STDOUT_FILE, ""), stderr=texts.get(contract.STDERR_FILE, ""), has_result=False
            )
        envelope.seek(0)
        try:
            header = contract.open_envelope(envelope, "result", verify=contract.hmac_verifier(result_key))
            contract.check_versions(header.get("versions", {}), "result")
        except contract.ContractError as e:
            raise ResultError(f"the job's result failed verification: {e}") from e
        try:
            outcome = cloudpickle.load(envelope)
        except Exception as e:  # the task's own types may be missing on the client
            raise ResultError(
                f"the job's result could not be unpickled here: {type(e).__name__}: {e}. "
                "Every module the return value's types come from must be importable on the Covalent server."
            ) from e
    # The output inside the authenticated envelope is the one to show; the archive's plain files
    # (which anyone able to re-pack the archive could change) serve only a job that left no result.
    return JobOutcome(
        ok=outcome["ok"],
        value=outcome.get("value"),
        exception=outcome.get("exception"),
        stdout=outcome.get("stdout", ""),
        stderr=outcome.get("stderr", ""),
        tasks=outcome.get("tasks"),
    )
