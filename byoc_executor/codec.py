"""The client's half of the envelope format defined in ``container/byoc_entry.py``.

Pickling and unpickling are CPU work: callers run them in a worker thread so the Covalent
server's event loop never stalls on a large argument or result.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import tarfile
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from byoc_executor.container import byoc_entry as contract
from byoc_executor.errors import ResultError, TaskEncodingError


@dataclass
class EncodedTask:
    """A signed payload envelope, and what the job needs to verify it and authenticate its result.

    The private key that signed the envelope is not kept anywhere: it existed only inside
    ``encode_task``. ``result_key`` is secret from everyone but the job (see README, threat model).
    """

    envelope: bytes
    body_sha256: str
    public_key: str
    result_key: str = field(repr=False)

    def hyperparameters(self) -> dict[str, str]:
        """What the job needs to verify this payload and authenticate its result."""
        return {
            contract.HP_PROTOCOL: str(contract.PROTOCOL_VERSION),
            contract.HP_PAYLOAD_SHA256: self.body_sha256,
            contract.HP_PAYLOAD_PUBLIC_KEY: self.public_key,
            contract.HP_RESULT_KEY: self.result_key,
        }


def encode_task(function: Any, args: list, kwargs: dict) -> EncodedTask:
    """Pickle the electron into a payload envelope signed with a fresh Ed25519 key.

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
    key = Ed25519PrivateKey.generate()
    out = io.BytesIO()
    contract.write_envelope(
        out, body, "payload", authenticate=lambda canonical: {"signature": base64.b64encode(key.sign(contract.PAYLOAD_DOMAIN + canonical)).decode()}
    )
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return EncodedTask(out.getvalue(), hashlib.sha256(body).hexdigest(), base64.b64encode(public).decode(), secrets.token_hex(32))


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


def read_results_archive(archive: bytes | str, result_key: str) -> JobOutcome:
    """Verify and unpack a job's ``model.tar.gz``: the result envelope and the captured output.

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
        header, body = contract.read_envelope(io.BytesIO(raw), "result", verify=contract.hmac_verifier(result_key))
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
    # The output inside the authenticated envelope is the one to show; the archive's plain files
    # (which anyone able to re-pack the archive could change) serve only a job that left no result.
    return JobOutcome(
        ok=outcome["ok"],
        value=outcome.get("value"),
        exception=outcome.get("exception"),
        stdout=outcome.get("stdout", ""),
        stderr=outcome.get("stderr", ""),
    )
