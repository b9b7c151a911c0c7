"""The client's half of the envelope format defined in ``container/byoc_entry.py``.

Pickling and unpickling are CPU work: callers run them in a worker thread so the Covalent
server's event loop never stalls on a large argument or result.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from typing import Any

import cloudpickle

from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import ResultError, TaskEncodingError


@dataclass
class EncodedTask:
    envelope: bytes
    body_sha256: str


def encode_task(function: Any, args: list, kwargs: dict) -> EncodedTask:
    """Pickle the electron into a payload envelope.

    Raises:
        TaskEncodingError: the function or an argument cannot be pickled; says which.
    """
    try:
        body = cloudpickle.dumps({"function": function, "args": args, "kwargs": kwargs})
    except Exception as e:  # cloudpickle raises many types (PicklingError, TypeError, ...)
        culprit = _find_unpicklable(function, args, kwargs)
        raise TaskEncodingError(
            f"cannot pickle the electron's {culprit} with cloudpickle: {type(e).__name__}: {e}. "
            "Objects such as open files, locks, sockets and live clients cannot travel to a job: "
            "create them inside the electron instead."
        ) from e
    out = io.BytesIO()
    contract.write_envelope(out, body, "payload")
    return EncodedTask(out.getvalue(), hashlib.sha256(body).hexdigest())


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
    """False when the job died before writing its result: the archive held only what it printed."""


def read_results_archive(archive: bytes | str) -> JobOutcome:
    """Verify and unpack a job's ``model.tar.gz``: the result envelope and the captured output.

    Args:
        archive: the archive's bytes, or a path to it.

    Returns:
        The outcome; ``has_result`` is False when the archive holds no result envelope (the job
        died before writing one), with whatever the task printed until then.

    Raises:
        ResultError: the archive or the envelope is unreadable, truncated, altered, or written by
            other versions. Nothing is unpickled unless every check passed.
    """
    fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")
    try:
        with fileobj, tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}

            def text(name: str) -> str:
                if name not in members:
                    return ""
                return tar.extractfile(members[name]).read().decode("utf-8", "replace")  # type: ignore[union-attr]

            stdout, stderr = text(contract.STDOUT_FILE), text(contract.STDERR_FILE)
            if contract.RESULT_FILE not in members:
                return JobOutcome(ok=False, stdout=stdout, stderr=stderr, has_result=False)
            raw = tar.extractfile(members[contract.RESULT_FILE]).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ResultError(f"the job's results archive is unreadable: {type(e).__name__}: {e}") from e
    try:
        header, body = contract.read_envelope(io.BytesIO(raw), "result")
        contract.check_versions(header.get("versions", {}), "result")
    except contract.ContractError as e:
        raise ResultError(f"the job's result failed verification: {e}") from e
    try:
        outcome = cloudpickle.loads(body)
    except Exception as e:  # the task's own types may be missing on the client
        raise ResultError(
            f"the job's result could not be unpickled here: {type(e).__name__}: {e}. "
            "Every module the return value's types come from must be importable on the Covalent server."
        ) from e
    return JobOutcome(ok=outcome["ok"], value=outcome.get("value"), exception=outcome.get("exception"), stdout=stdout, stderr=stderr)
