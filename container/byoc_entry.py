"""The byoc-executor entry script: runs one Covalent electron inside a Braket or SageMaker job.

This one file is what the container image starts, what the local emulator starts, and what the
tests call; the client imports its constants, so names and paths are defined only here. It needs
the standard library at import time, and cloudpickle (plus whatever the task imports) to run a task.

How it is started
    SageMaker training job:  ``docker run IMAGE train`` -> ``python byoc_entry.py train``
    Braket hybrid job:       the image's ``SAGEMAKER_PROGRAM`` (this file), with ``AMZN_BRAKET_*``
                             set. The job's source archive (``AMZN_BRAKET_SCRIPT_S3_URI``) holds a
                             copy of this file; its entry point must be ``byoc_entry:run_job``.
    Local mode and tests:    the same, with ``SAGEMAKER_BASE_DIR`` moving the ``/opt/ml`` tree
                             (the sagemaker-training-toolkit's own convention, environment.py).

The two layouts
    SageMaker fixes every path under ``/opt/ml``. Braket puts the job's inputs, hyperparameters
    and results under ``/opt/ml`` too, but names them through ``AMZN_BRAKET_*`` variables that
    point under ``/opt/braket``; AWS's own Braket containers make those paths exist by linking
    ``/opt/braket`` to ``/opt/ml`` before anything else (amazon-braket-containers,
    ``src/braket_container.py``, ``create_symlink()``), and so does this script. Under Braket every
    path comes from its variable (none is guessed): a missing one is a contract error. With
    ``SAGEMAKER_BASE_DIR`` set, the link is ``<base dir>/../braket`` -> ``<base dir>``.

What it reads
    <input dir>/payload/task.byoc   the task envelope, copied in by the service from the job's
                                    "payload" input channel (SageMaker: /opt/ml/input/data,
                                    Braket: $AMZN_BRAKET_INPUT_DIR)
    hyperparameters.json            SageMaker: /opt/ml/input/config/; Braket: $AMZN_BRAKET_HP_FILE
                                    (/opt/braket/input/config/hyperparameters.json, via the link).
                                    Keys: byoc_protocol, byoc_payload_digest (the SHA-256 of
                                    the payload's canonical header, which holds the body's digest
                                    and the result key: the job's immutable request pins the whole
                                    payload), byoc_environment (JSON object of environment
                                    variables for the task; Braket has no other way),
                                    byoc_source_sha256 (Braket: the digest the source archive must
                                    have; checked before anything in it is unpacked or imported),
                                    byoc_checkpoints ("true" exactly when the job has a checkpoint
                                    configuration; see BYOC_CHECKPOINT_DIR below).
                                    No key or secret: hyperparameters are part of the job's
                                    description, readable by anyone allowed to describe the job.

    resourceconfig.json             /opt/ml/input/config/: with several hosts, the task runs on the
                                    first (sorted) host only, unless byoc_all_hosts is "true"
    For the task it sets BYOC_CURRENT_HOST and BYOC_HOSTS, and BYOC_CHECKPOINT_DIR (the directory
    the service syncs with the job's checkpoint S3 URI) only when byoc_checkpoints is "true":
    neither service tells a container whether its job has a checkpoint configuration
    (SageMaker's /opt/ml/checkpoints is only CheckpointConfig.LocalPath's default; whether Braket
    sets $AMZN_BRAKET_CHECKPOINT_DIR without a checkpointConfig is unconfirmed), and a directory
    nothing syncs would lose what a task saved there. The path is the service's: SageMaker's
    default LocalPath (the client never sets another), Braket's $AMZN_BRAKET_CHECKPOINT_DIR (a
    contract error if the flag is set and the variable is not); never one of this script's own.

What it runs
    The payload's body is one call (``function(*args, **kwargs)``: Covalent's wrapper over the
    electron, its arguments TransportableObjects) or, when its header says ``"job": "group"``, a
    Covalent task group: ``{"dispatch_id", "tasks": [{"node_id", "function", "hooks", "args":
    [node id], "kwargs": {name: node id}}], "inputs": {node id: output}}``, the values being
    Covalent's serialized node assets. The tasks run in order in this process; a task reads the
    outputs of earlier tasks or the inputs; the first that raises fails, and those after it do not
    run (``run_group``).

What it writes
    <results dir>/result.byoc       the result envelope: the return value, or the exception's
                                    type, message and traceback; for a group, each task's status,
                                    serialized output or exception, stdout and stderr
                                    (SageMaker: /opt/ml/model, Braket:
                                    $AMZN_BRAKET_JOB_RESULTS_DIR; the service tars it)
    <results dir>/stdout.txt, stderr.txt   what the task printed (also echoed to the job's logs, and
                                    inside result.byoc, where it is authenticated)
    /opt/ml/output/failure          a one-line summary (at most 1,024 characters) on any error

Exit codes
    0  the task returned; result.byoc holds the value
    1  the task raised; result.byoc holds the exception
    2  setup failed before the task ran (payload missing or corrupt, version mismatch, bad
       contract); the failure file says why
    3  the task ran but its result could not be written (e.g. it cannot be pickled)
    A stop or cancel (SIGTERM from the service) is raised inside the task as ``JobStopped``, so a
    stopped job still leaves its result envelope (with that exception) and a failure file.

The envelope (payload and result alike)
    b"BYOC" | u8 format version | u32 big-endian header length | header (UTF-8 JSON) | body
    The header records the protocol version, the writer's Python/cloudpickle/covalent versions
    and the body's length and SHA-256. The canonical header is the header without ``mac``, as
    sorted compact JSON; it includes the body's digest, so whatever covers it covers the body.
    A payload's header also holds ``result_key``, a fresh HMAC-SHA256 key for this task's result;
    the payload is authenticated by its canonical header's SHA-256, given out of band in the
    hyperparameters (``byoc_payload_digest``). A result carries ``mac`` (HMAC-SHA256 under that
    key over RESULT_DOMAIN + its canonical header): only readers of the payload object (the job's
    role, the client) know the key. Readers check the protocol, the authentication, then the
    body's length and digest, then the versions, and only then unpickle.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable

PROTOCOL_VERSION = 2
"""2: the result key travels inside the payload (1, byoc-executor 0.1.x, put it in the
hyperparameters and signed payloads with Ed25519). Each side refuses the other's."""

# --- file names and channels -------------------------------------------------------------------
PAYLOAD_CHANNEL = "payload"
PAYLOAD_FILE = "task.byoc"
RESULT_FILE = "result.byoc"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
SOURCE_ARCHIVE = "source.tar.gz"
ENTRY_MODULE = "byoc_entry"
BRAKET_ENTRY_POINT = f"{ENTRY_MODULE}:run_job"

# --- hyperparameter keys (both services pass hyperparameters as a JSON file of strings) ----------
HP_PROTOCOL = "byoc_protocol"
HP_PAYLOAD_DIGEST = "byoc_payload_digest"  # SHA-256 of the payload's canonical header
HP_ENVIRONMENT = "byoc_environment"
HP_SOURCE_SHA256 = "byoc_source_sha256"  # Braket: the digest the source archive must have
HP_ALL_HOSTS = "byoc_all_hosts"  # "true": run the task on every host, not only the leader
# "true" exactly when the client gave the job a checkpoint configuration (checkpoint_s3_uri):
# the only way the script learns it, so BYOC_CHECKPOINT_DIR is set only for a synced directory.
HP_CHECKPOINTS = "byoc_checkpoints"
RESULT_KEY_FIELD = "result_key"  # in the payload's header: the hex HMAC-SHA256 key of the result
JOB_FIELD = "job"  # in the payload's header: what the body is, JOB_CALL (absent: the same) or JOB_GROUP
JOB_CALL = "call"  # {"function", "args", "kwargs"}: one call, Covalent's wrapper over the electron
JOB_GROUP = "group"  # a Covalent task group: its nodes' serialized assets, run in order (run_group)

# Domain separation: a result MAC is never valid for another purpose or protocol.
RESULT_DOMAIN = b"byoc-executor result v2\n"

# --- environment ---------------------------------------------------------------------------------
# The sagemaker-training-toolkit reads this to move /opt/ml outside a container (its
# environment.py, BASE_PATH_ENV); local mode and tests use it the same way.
ENV_ML_ROOT = "SAGEMAKER_BASE_DIR"
DEFAULT_ML_ROOT = "/opt/ml"
BRAKET_ROOT_NAME = "braket"  # /opt/braket, beside /opt/ml
# Set for the task: where the service syncs checkpoints with checkpoint_s3_uri, whichever service.
ENV_TASK_CHECKPOINT_DIR = "BYOC_CHECKPOINT_DIR"
# Set for the task: this host's name and every host's, when the job has several instances.
ENV_TASK_CURRENT_HOST = "BYOC_CURRENT_HOST"
ENV_TASK_HOSTS = "BYOC_HOSTS"
# Braket's contract (set by the service in the container).
ENV_BRAKET_JOB_NAME = "AMZN_BRAKET_JOB_NAME"
ENV_BRAKET_DEVICE_ARN = "AMZN_BRAKET_DEVICE_ARN"
ENV_BRAKET_SCRIPT_S3_URI = "AMZN_BRAKET_SCRIPT_S3_URI"
ENV_BRAKET_SCRIPT_ENTRY_POINT = "AMZN_BRAKET_SCRIPT_ENTRY_POINT"
ENV_BRAKET_SCRIPT_COMPRESSION_TYPE = "AMZN_BRAKET_SCRIPT_COMPRESSION_TYPE"
ENV_BRAKET_JOB_RESULTS_DIR = "AMZN_BRAKET_JOB_RESULTS_DIR"
ENV_BRAKET_CHECKPOINT_DIR = "AMZN_BRAKET_CHECKPOINT_DIR"
ENV_BRAKET_HP_FILE = "AMZN_BRAKET_HP_FILE"
ENV_BRAKET_INPUT_DIR = "AMZN_BRAKET_INPUT_DIR"
ENV_BRAKET_OUT_S3_BUCKET = "AMZN_BRAKET_OUT_S3_BUCKET"
ENV_BRAKET_TASK_RESULTS_S3_URI = "AMZN_BRAKET_TASK_RESULTS_S3_URI"
ENV_BRAKET_JOB_RESULTS_S3_PATH = "AMZN_BRAKET_JOB_RESULTS_S3_PATH"
ENV_BRAKET_JOB_TOKEN = "AMZN_BRAKET_JOB_TOKEN"

# --- exit codes ----------------------------------------------------------------------------------
EXIT_OK = 0
EXIT_TASK_RAISED = 1
EXIT_SETUP_FAILED = 2
EXIT_RESULT_FAILED = 3

FAILURE_REASON_LIMIT = 1024  # the services keep this many characters of the failure file

_MAGIC = b"BYOC"
_FORMAT = 1
_PREFIX = struct.Struct(">4sBI")
_MAX_HEADER = 1 << 20
_CHUNK = 1 << 20


class ContractError(Exception):
    """The job's environment, payload or versions do not satisfy the contract above."""


class JobStopped(BaseException):
    """The service stopped the job (SIGTERM) while the task ran: a cancel, a stop or a time limit."""


# --- envelopes ------------------------------------------------------------------------------------


def runtime_versions() -> dict[str, str]:
    """The versions that must agree between the client and the job for unpickling to be safe."""
    return dict(_runtime_versions())


@functools.lru_cache(maxsize=1)
def _runtime_versions() -> tuple[tuple[str, str], ...]:
    # Reading distribution metadata scans sys.path (milliseconds): once per process is enough.
    versions = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for name in ("cloudpickle", "covalent"):
        versions[name] = _distribution_version(name)
    return tuple(versions.items())


def _distribution_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def canonical_header(header: dict) -> bytes:
    """The bytes that a MAC or a header digest covers: the header without its ``mac``."""
    core = {k: v for k, v in header.items() if k != "mac"}
    return json.dumps(core, sort_keys=True, separators=(",", ":")).encode()


def hmac_authenticator(key_hex: str) -> Callable[[bytes], dict]:
    """Adds the ``mac`` of a result header (for ``write_envelope(authenticate=...)``)."""
    import hmac

    key = bytes.fromhex(key_hex)
    return lambda canonical: {"mac": hmac.new(key, RESULT_DOMAIN + canonical, "sha256").hexdigest()}


def hmac_verifier(key_hex: str) -> Callable[[bytes, dict], None]:
    """Checks the ``mac`` of a result header (for ``read_envelope(verify=...)``)."""
    import hmac

    key = bytes.fromhex(key_hex)

    def verify(canonical: bytes, header: dict) -> None:
        mac = header.get("mac")
        if not isinstance(mac, str):
            raise ContractError("the result is not authenticated (no MAC): refusing it")
        if not hmac.compare_digest(mac, hmac.new(key, RESULT_DOMAIN + canonical, "sha256").hexdigest()):
            raise ContractError("the result's MAC does not verify: it was not written by this task's job, or was altered")

    return verify


def header_digest(header: dict) -> str:
    """The SHA-256 of a header's canonical form (``byoc_payload_digest`` for a payload)."""
    return hashlib.sha256(canonical_header(header)).hexdigest()


class _Digesting:
    """A write-only file that passes everything on to ``out`` and keeps its length and SHA-256."""

    def __init__(self, out: BinaryIO):
        self.out, self.sha, self.length = out, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        # The pickler hands large bytes, buffers and arrays over as they are: no copy is made.
        self.sha.update(data)
        self.length += memoryview(data).nbytes
        return self.out.write(data)


def pickle_to(obj: Any, out: BinaryIO) -> tuple[int, str]:
    """Pickle ``obj`` into ``out`` as a stream (no whole copy in memory); return (length, SHA-256)."""
    import cloudpickle

    digesting = _Digesting(out)
    cloudpickle.dump(obj, digesting)
    return digesting.length, digesting.sha.hexdigest()


def make_header(
    kind: str, body_length: int, body_sha256: str, extra: dict | None = None, authenticate: Callable[[bytes], dict] | None = None
) -> dict:
    """An envelope's header.

    Args:
        extra: more fields (a payload's ``result_key``).
        authenticate: given the canonical header, returns the fields that authenticate it (``mac``).
    """
    header = {
        "protocol": PROTOCOL_VERSION,
        "kind": kind,
        "versions": runtime_versions(),
        "body_length": body_length,
        "body_sha256": body_sha256,
    }
    header.update(extra or {})
    if authenticate is not None:
        header.update(authenticate(canonical_header(header)))
    return header


def head_bytes(header: dict) -> bytes:
    """The bytes of an envelope that come before its body: prefix and header."""
    raw = json.dumps(header, sort_keys=True).encode()
    return _PREFIX.pack(_MAGIC, _FORMAT, len(raw)) + raw


def envelope_head(
    kind: str, body_length: int, body_sha256: str, extra: dict | None = None, authenticate: Callable[[bytes], dict] | None = None
) -> bytes:
    """``head_bytes(make_header(...))``."""
    return head_bytes(make_header(kind, body_length, body_sha256, extra, authenticate))


def write_envelope(
    out: BinaryIO, body: bytes, kind: str, extra: dict | None = None, authenticate: Callable[[bytes], dict] | None = None
) -> None:
    """Write ``body`` as an envelope of ``kind`` ("payload" or "result") to ``out``."""
    out.write(envelope_head(kind, len(body), hashlib.sha256(body).hexdigest(), extra, authenticate))
    out.write(body)


def open_envelope(
    stream: IO[bytes],
    kind: str,
    expected_header_digest: str | None = None,
    verify: Callable[[bytes, dict], None] | None = None,
) -> dict:
    """Verify an envelope in a seekable file and leave the file at the start of its body.

    The body is read in chunks to check its length and digest, never held whole; once this returns,
    ``cloudpickle.load(stream)`` reads the verified body.

    Args:
        stream: the envelope, opened for binary reading, seekable.
        kind: the kind the caller expects.
        expected_header_digest: the canonical header's SHA-256 the caller was told out of band
            (a payload's ``byoc_payload_digest``); the header must have it exactly.
        verify: checks the header's authentication (``hmac_verifier``); it runs before the body
            is even read.

    Returns:
        The verified header.

    Raises:
        ContractError: wrong magic or format, wrong kind or protocol, truncated, digest mismatch.
    """
    prefix = stream.read(_PREFIX.size)
    if len(prefix) != _PREFIX.size:
        raise ContractError(f"the {kind} is truncated: {len(prefix)} bytes, not even a header")
    magic, fmt, header_len = _PREFIX.unpack(prefix)
    if magic != _MAGIC or fmt != _FORMAT:
        raise ContractError(f"the {kind} is not a byoc-executor envelope (magic {magic!r}, format {fmt})")
    if header_len > _MAX_HEADER:
        raise ContractError(f"the {kind} header claims {header_len} bytes; refusing")
    raw = stream.read(header_len)
    if len(raw) != header_len:
        raise ContractError(f"the {kind} is truncated inside its header")
    try:
        header = json.loads(raw)
    except ValueError as e:
        raise ContractError(f"the {kind} header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise ContractError(f"the {kind} header is not a JSON object")
    if header.get("protocol") != PROTOCOL_VERSION:
        # Read before anything is trusted, to say what is wrong; refused either way.
        raise ContractError(
            f"the {kind} uses byoc-executor protocol {header.get('protocol')}, this side speaks only "
            f"{PROTOCOL_VERSION}: {_PROTOCOL_FIX}"
        )
    if expected_header_digest is not None and header_digest(header) != expected_header_digest:
        raise ContractError(
            f"the {kind} header digest is not the one the client submitted ({expected_header_digest[:16]}...): "
            "the object was replaced or altered after submission"
        )
    if verify is not None:
        verify(canonical_header(header), header)
    if header.get("kind") != kind:
        raise ContractError(f"expected a {kind} envelope, found {header.get('kind')!r}")
    length = header.get("body_length")
    if not isinstance(length, int) or length < 0:
        raise ContractError(f"the {kind} header gives no body length")
    start, remaining, sha = stream.tell(), length, hashlib.sha256()
    while remaining and (chunk := stream.read(min(_CHUNK, remaining))):
        sha.update(chunk)
        remaining -= len(chunk)
    if remaining or stream.read(1):
        raise ContractError(
            f"the {kind} body has {length - remaining if remaining else 'more than ' + str(length)} bytes, "
            f"its header says {length}: truncated or altered"
        )
    digest = sha.hexdigest()
    if digest != header.get("body_sha256"):
        raise ContractError(f"the {kind} body does not match its digest: corrupted or altered")
    stream.seek(start)
    return header


_PROTOCOL_FIX = (
    "the client and the job image must come from the same byoc-executor release: rebuild the image "
    "from the client's checkout (container/build_and_push.sh), or install the image's release on the client"
)


def read_envelope(
    stream: IO[bytes],
    kind: str,
    expected_header_digest: str | None = None,
    verify: Callable[[bytes, dict], None] | None = None,
) -> tuple[dict, bytes]:
    """``open_envelope``, then the body as bytes: for envelopes small enough to hold in memory."""
    header = open_envelope(stream, kind, expected_header_digest, verify)
    return header, stream.read(header["body_length"])


def check_versions(theirs: dict[str, str], what: str) -> None:
    """Refuse to unpickle bytes written by a different Python minor or cloudpickle/covalent version.

    Raises:
        ContractError: naming both versions and the fix.
    """
    ours = runtime_versions()
    wrong = [f"{k} {theirs.get(k)} (client) vs {v} (job)" for k, v in ours.items() if theirs.get(k) != v]
    if wrong:
        raise ContractError(
            f"version mismatch between the client and the job image ({what}): "
            + "; ".join(wrong)
            + ". Rebuild the image with matching versions (container/build_and_push.sh with "
            "--build-arg PYTHON_VERSION / COVALENT_VERSION / CLOUDPICKLE_VERSION) or install "
            "those versions on the client."
        )


# --- the job's layout -------------------------------------------------------------------------------


class JobLayout:
    """Where this job's inputs and outputs are, under either service's contract.

    Nothing here touches the file system: ``problems()`` says what the environment lacks and
    ``link_braket_root()`` makes the Braket paths exist.
    """

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.ml_root = Path(env.get(ENV_ML_ROOT) or DEFAULT_ML_ROOT)
        self.braket_root = self.ml_root.parent / BRAKET_ROOT_NAME
        self.is_braket = ENV_BRAKET_JOB_NAME in env
        self.service = "braket" if self.is_braket else "sagemaker"
        self._missing: list[str] = []
        if self.is_braket:
            self.input_dir = self._braket_path(env, ENV_BRAKET_INPUT_DIR)
            self.results_dir = self._braket_path(env, ENV_BRAKET_JOB_RESULTS_DIR)
            self.hp_file = self._braket_path(env, ENV_BRAKET_HP_FILE)
            # Set from checkpointConfig.localPath (default /opt/braket/checkpoints) for a job with
            # a checkpoint configuration; unset here, the task gets no checkpoint directory.
            self.checkpoint_dir: Path | None = Path(env[ENV_BRAKET_CHECKPOINT_DIR]) if env.get(ENV_BRAKET_CHECKPOINT_DIR) else None
        else:
            self.input_dir = self.ml_root / "input" / "data"
            self.results_dir = self.ml_root / "model"
            self.hp_file = self.ml_root / "input" / "config" / "hyperparameters.json"
            # CheckpointConfig.LocalPath's default; synced only if the job has a CheckpointConfig,
            # which SageMaker does not tell the container (see task_checkpoint_dir).
            self.checkpoint_dir = self.ml_root / "checkpoints"
        self.failure_file = self.ml_root / "output" / "failure"
        self.payload_file = self.input_dir / PAYLOAD_CHANNEL / PAYLOAD_FILE
        self.resource_config = self.ml_root / "input" / "config" / "resourceconfig.json"

    def _braket_path(self, env: dict[str, str], name: str) -> Path:
        value = env.get(name)
        if not value:
            self._missing.append(name)
            return Path("/nonexistent") / name  # never used: problems() reports it first
        return Path(value)

    def problems(self) -> list[str]:
        """The contract variables the environment lacks (Braket sets them all for a byoc job)."""
        return [f"${name} is not set" for name in self._missing]

    def link_braket_root(self) -> None:
        """Link ``/opt/braket`` to ``/opt/ml``, as AWS's own Braket containers do at start.

        Braket writes the job's files under ``/opt/ml`` and names them under ``/opt/braket``. An
        existing ``/opt/braket`` is left alone (AWS's container ignores EEXIST the same way).

        Raises:
            ContractError: the link cannot be made.
        """
        if not self.is_braket:
            return
        try:
            os.symlink(self.ml_root, self.braket_root, target_is_directory=True)
        except FileExistsError:
            pass
        except OSError as e:
            raise ContractError(f"cannot link {self.braket_root} to {self.ml_root} (Braket's layout): {e}") from e

    def hosts(self) -> tuple[str, list[str]]:
        """This host's name and all hosts' (SageMaker's resourceconfig.json; one host if absent)."""
        if not self.resource_config.exists():
            return "algo-1", ["algo-1"]
        with open(self.resource_config) as f:
            config = json.load(f)
        hosts = list(config.get("hosts") or ["algo-1"])
        return str(config.get("current_host", hosts[0])), hosts

    def task_checkpoint_dir(self, hp: dict[str, str]) -> Path | None:
        """The checkpoint directory the task is told of: only when ``HP_CHECKPOINTS`` says the job
        has a checkpoint configuration, and then the service's path (see the module docstring).

        Raises:
            ContractError: the flag is set on Braket, and ``$AMZN_BRAKET_CHECKPOINT_DIR`` is not.
        """
        if str(hp.get(HP_CHECKPOINTS, "")).lower() != "true":
            return None
        if self.checkpoint_dir is None:
            raise ContractError(
                f"the job has a checkpoint configuration ({HP_CHECKPOINTS}), but ${ENV_BRAKET_CHECKPOINT_DIR} is not set"
            )
        return self.checkpoint_dir

    def hyperparameters(self) -> dict[str, str]:
        if self.problems():
            raise ContractError("the Braket job environment is incomplete: " + "; ".join(self.problems()))
        if not self.hp_file.exists():
            raise ContractError(f"no hyperparameters file at {self.hp_file}: the job was not submitted by byoc-executor")
        with open(self.hp_file) as f:
            return json.load(f)


# --- running the task -------------------------------------------------------------------------------


class _Tee(io.TextIOBase):
    """Writes to the job's real stream (so the service's logs see it) and to a capture file."""

    def __init__(self, real: IO[str], capture: IO[str]):
        self._real, self._capture = real, capture

    def write(self, s: str) -> int:
        self._real.write(s)
        self._real.flush()
        self._capture.write(s)
        return len(s)

    def flush(self) -> None:
        self._real.flush()
        self._capture.flush()

    def writable(self) -> bool:
        return True


def _qualified_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _write_failure(layout: JobLayout, summary: str) -> None:
    layout.failure_file.parent.mkdir(parents=True, exist_ok=True)
    layout.failure_file.write_text(summary[:FAILURE_REASON_LIMIT])


def _write_result(layout: JobLayout, outcome: dict, result_key: str) -> None:
    # The body is pickled straight to disk, then copied behind its header: a large return value
    # is never held twice in memory.
    layout.results_dir.mkdir(parents=True, exist_ok=True)
    body_path = layout.results_dir / (RESULT_FILE + ".body")
    tmp = layout.results_dir / (RESULT_FILE + ".part")
    try:
        with open(body_path, "w+b") as body:
            length, digest = pickle_to(outcome, body)
            body.seek(0)
            with open(tmp, "wb") as f:
                f.write(envelope_head("result", length, digest, authenticate=hmac_authenticator(result_key)))
                shutil.copyfileobj(body, f, _CHUNK)
        tmp.replace(layout.results_dir / RESULT_FILE)
    finally:
        body_path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _exception_outcome(exc: BaseException) -> dict:
    import cloudpickle

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickled = cloudpickle.dumps(exc)
    except Exception:  # an exception that cannot travel still travels as text
        pickled = None
    return {
        "ok": False,
        "exception": {"type": _qualified_name(exc), "message": str(exc), "traceback": tb, "pickled": pickled},
    }


@contextlib.contextmanager
def _stop_on_sigterm():
    """Turn the service's SIGTERM into ``JobStopped`` in the task, so its outcome is still written."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def stop(signum: int, frame: Any) -> None:
        raise JobStopped("the service stopped the job (SIGTERM): a cancel, a stop or its maximum runtime")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(layout: JobLayout) -> int:
    """Run the job described by ``layout``: verify the payload, run the task, write the result.

    Returns:
        The exit code (see the module docstring).
    """
    try:
        layout.link_braket_root()
        hp = layout.hyperparameters()
        if str(hp.get(HP_PROTOCOL)) != str(PROTOCOL_VERSION):
            raise ContractError(
                f"the client speaks byoc-executor protocol {hp.get(HP_PROTOCOL)}, this image speaks only "
                f"{PROTOCOL_VERSION}: {_PROTOCOL_FIX}"
            )
        if not hp.get(HP_PAYLOAD_DIGEST):
            raise ContractError(f"hyperparameter {HP_PAYLOAD_DIGEST} is missing: refusing an unauthenticated task")
        if not layout.payload_file.exists():
            raise ContractError(f"the payload is missing: no {layout.payload_file} (input channel '{PAYLOAD_CHANNEL}')")
        with open(layout.payload_file, "rb") as payload:
            header = open_envelope(payload, "payload", expected_header_digest=hp[HP_PAYLOAD_DIGEST])
            result_key = header.get(RESULT_KEY_FIELD)
            if not isinstance(result_key, str) or len(result_key) != 64:
                raise ContractError("the payload's header holds no result key")
            check_versions(header.get("versions", {}), "payload")
            current, hosts = layout.hosts()
            if current != sorted(hosts)[0] and str(hp.get(HP_ALL_HOSTS, "")).lower() != "true":
                # Several instances: the task runs once, on the leader; the others have nothing to do.
                print(f"byoc-executor: {current} is not the leader of {hosts}; the task runs on {sorted(hosts)[0]}", flush=True)
                return EXIT_OK
            os.environ.update(json.loads(hp.get(HP_ENVIRONMENT) or "{}"))
            checkpoints = layout.task_checkpoint_dir(hp)
            if checkpoints is not None:
                os.environ[ENV_TASK_CHECKPOINT_DIR] = str(checkpoints)
            else:  # the executor's variable: one from the image or the environment setting would name an unsynced dir
                os.environ.pop(ENV_TASK_CHECKPOINT_DIR, None)
            os.environ[ENV_TASK_CURRENT_HOST] = current
            os.environ[ENV_TASK_HOSTS] = ",".join(hosts)
            import cloudpickle

            task = cloudpickle.load(payload)  # the verified body, read from disk
        group = header.get(JOB_FIELD) == JOB_GROUP
        if not group:
            function, args, kwargs = task["function"], task["args"], task["kwargs"]
    except Exception as e:
        summary = f"byoc-executor setup failed: {type(e).__name__}: {e}"
        print(summary, file=sys.stderr, flush=True)
        traceback.print_exc()
        _write_failure(layout, summary)
        return EXIT_SETUP_FAILED

    layout.results_dir.mkdir(parents=True, exist_ok=True)
    with _stop_on_sigterm(), open(layout.results_dir / STDOUT_FILE, "w") as out, open(layout.results_dir / STDERR_FILE, "w") as err:
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, out)), contextlib.redirect_stderr(_Tee(sys.stderr, err)):
                if group:
                    outcome: dict[str, Any] = run_group(task)
                else:
                    try:
                        value = function(*args, **kwargs)
                        outcome = {"ok": True, "value": value}
                    except BaseException as e:  # the task's own failure, SystemExit included, is data
                        traceback.print_exc()
                        outcome = _exception_outcome(e)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    # The output travels inside the authenticated result too: the plain files in the archive are
    # for a job that dies before it writes a result, and nobody has to trust them otherwise.
    outcome["stdout"] = (layout.results_dir / STDOUT_FILE).read_text(errors="replace")
    outcome["stderr"] = (layout.results_dir / STDERR_FILE).read_text(errors="replace")
    try:
        _write_result(layout, outcome, result_key)
    except Exception as e:
        summary = f"byoc-executor could not write the result: {type(e).__name__}: {e}"
        print(summary, file=sys.stderr, flush=True)
        _write_failure(layout, summary)
        return EXIT_RESULT_FAILED
    if not outcome["ok"]:
        exc = outcome.get("exception") or next(t["exception"] for t in outcome["tasks"] if t["status"] == "FAILED")
        _write_failure(layout, f"{exc['type']}: {exc['message']}")
        return EXIT_TASK_RAISED
    return EXIT_OK


def run_group(body: dict) -> dict:
    """Run a Covalent task group's tasks in order, each with its own stdout and stderr.

    What Covalent's own runner does for a group (``covalent/executor/utils/wrappers.py``), with
    every input in the payload instead of behind the Covalent server's URL: the hooks (deps,
    call_before, call_after) of each task run in its process, and a task that raises ends the
    group: the tasks after it are not run.

    Returns:
        ``{"ok": bool, "tasks": [{"node_id", "status": "COMPLETED" | "FAILED" | "NOT_RUN",
        "output": the serialized output or None, "exception", "stdout", "stderr"}]}``.
    """
    from covalent.executor.utils import set_context
    from covalent.executor.utils.serialize import deserialize_node_asset, serialize_node_asset
    from covalent.executor.utils.wrappers import _gather_deps, wrapper_fn

    outputs: dict[int, Any] = {}
    tasks: list[dict] = []
    failed = None
    for task in body["tasks"]:
        node = task["node_id"]
        if failed is not None:
            tasks.append({"node_id": node, "status": "NOT_RUN", "output": None, "exception": None, "stdout": "",
                          "stderr": f"byoc-executor: not run: node {failed} of the same task group failed before it\n"})
            continue
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(_Tee(sys.stdout, out)), contextlib.redirect_stderr(_Tee(sys.stderr, err)):
            try:
                function = deserialize_node_asset(task["function"], "function")
                hooks = deserialize_node_asset(task["hooks"], "hooks") if task["hooks"] else {}
                call_before, call_after = _gather_deps(hooks.get("deps", {}), hooks.get("call_before", []), hooks.get("call_after", []))

                def value(source: int) -> Any:
                    return outputs[source] if source in outputs else deserialize_node_asset(body["inputs"][source], "output")

                args = [value(source) for source in task["args"]]
                kwargs = {name: value(source) for name, source in task["kwargs"].items()}
                with set_context(body["dispatch_id"], node):
                    output = wrapper_fn(function, call_before, call_after, *args, **kwargs)
                outputs[node] = output
                entry = {"node_id": node, "status": "COMPLETED", "output": serialize_node_asset(output, "output"), "exception": None}
            except BaseException as e:  # the task's own failure, SystemExit and a stop included, is data
                traceback.print_exc()
                failed = node
                entry = {"node_id": node, "status": "FAILED", "output": None, "exception": _exception_outcome(e)["exception"]}
        entry["stdout"], entry["stderr"] = out.getvalue(), err.getvalue()
        tasks.append(entry)
    return {"ok": failed is None, "tasks": tasks}


def run_job() -> None:
    """Braket entry point (``byoc_entry:run_job``): run the task and exit with its code."""
    sys.exit(execute(JobLayout()))


def _split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` (what byoc-executor sends) or an https S3 URL, virtual-hosted or path-style
    (what botocore's braket ``S3Path`` pattern also admits), as (bucket, key)."""
    import re

    for pattern in (r"s3://([^/]+)/(.+)", r"https://([^/]+)\.s3[.-][^/]*amazonaws\.com(?:\.cn)?/(.+)",
                    r"https://s3[.-][^/]*amazonaws\.com(?:\.cn)?/([^/]+)/(.+)"):
        found = re.fullmatch(pattern, uri)
        if found:
            return found.group(1), found.group(2)
    raise ContractError(f"${ENV_BRAKET_SCRIPT_S3_URI} is {uri!r}: not an S3 URI (s3://bucket/key or an https S3 URL)")


def _fetch_braket_source(layout: JobLayout) -> Callable[[], None]:
    """Download, verify and unpack the job's source and return its entry point.

    Braket's contract: the job names its source (a tar.gz archive, or one file when the
    compression type is NONE) and an entry point (``module:function``); the container fetches and
    runs it. byoc-executor's source is this very file. Its digest travels in the hyperparameters,
    and nothing from S3 is unpacked or imported unless it matches: whoever can write to the bucket
    cannot make the job run their code.
    """
    import boto3  # only the Braket path needs S3 from inside the job

    expected = layout.hyperparameters().get(HP_SOURCE_SHA256)
    if not expected:
        raise ContractError(f"hyperparameter {HP_SOURCE_SHA256} is missing: refusing to run unverified source")
    uri = os.environ[ENV_BRAKET_SCRIPT_S3_URI]
    entry = os.environ.get(ENV_BRAKET_SCRIPT_ENTRY_POINT)
    if not entry:
        raise ContractError(f"${ENV_BRAKET_SCRIPT_ENTRY_POINT} is not set: the job names no entry point")
    # Braket's scriptModeConfig.compressionType: GZIP or NONE (absent: NONE, as AWS's container reads it).
    compression = (os.environ.get(ENV_BRAKET_SCRIPT_COMPRESSION_TYPE) or "NONE").upper()
    bucket, key = _split_s3_uri(uri)
    code_dir = Path(tempfile.mkdtemp(prefix="byoc-code-"))
    download = code_dir / (SOURCE_ARCHIVE if compression == "GZIP" else Path(key).name)
    boto3.client("s3").download_file(bucket, key, str(download))
    digest = hashlib.sha256(download.read_bytes()).hexdigest()
    if digest != expected:
        raise ContractError(
            f"the job's source {uri} has digest {digest[:16]}..., not the submitted {expected[:16]}...: "
            "it was replaced after submission"
        )
    if compression == "GZIP":
        with tarfile.open(download) as tar:
            if hasattr(tarfile, "data_filter"):  # refuses absolute paths and links out of code_dir
                tar.extractall(code_dir, filter="data")
            else:  # Python before 3.10.12 / 3.11.4
                tar.extractall(code_dir)
    sys.path.insert(0, str(code_dir))
    module_name, _, func_name = entry.partition(":")
    import importlib

    module = importlib.import_module(module_name)
    return getattr(module, func_name or "main")


def main(argv: list[str] | None = None) -> int:
    """Start a job under whichever contract the environment describes. Returns the exit code."""
    layout = JobLayout()
    if layout.is_braket and ENV_BRAKET_SCRIPT_S3_URI in os.environ:
        try:
            layout.link_braket_root()
            entry = _fetch_braket_source(layout)
        except Exception as e:
            summary = f"byoc-executor setup failed: cannot load the job's source archive: {type(e).__name__}: {e}"
            print(summary, file=sys.stderr, flush=True)
            _write_failure(layout, summary)
            return EXIT_SETUP_FAILED
        try:
            entry()
        except SystemExit as e:
            return int(e.code or 0)
        return EXIT_OK
    return execute(layout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
