"""A Braket script-mode job, run the way the AWS-provided Braket job containers run it.

``python -m byoc_executor.local.braket_script_mode`` is what the emulator starts for a job on an
AWS-provided Braket image (whose image it does not have): the steps of amazon-braket-containers
``src/braket_container.py`` (see ``braket_contract.py`` [containers]), in the emulator's own
Python, which therefore needs whatever the job's code imports (for ``@hybrid_job`` jobs: the
Braket SDK and cloudpickle, as in the AWS image):

1. link ``/opt/braket`` to ``/opt/ml`` (here: ``$SAGEMAKER_BASE_DIR/../braket`` to
   ``$SAGEMAKER_BASE_DIR``, the job tree's ``opt/ml``);
2. download ``AMZN_BRAKET_SCRIPT_S3_URI`` into ``/opt/braket/code/customer_code/original``;
3. unpack it (``GZIP``/``ZIP``, else copy the file) into ``.../extracted`` and put that on ``sys.path``;
4. ``module:function`` is imported and called (with the hyperparameters as keyword arguments
   when they bind to its signature, converted by its annotations); a bare module is run as
   ``__main__``; the working directory is the extracted code;
5. when the code raises, ``<ExceptionType>: <message>`` goes to ``/opt/ml/output/failure`` and
   the exit code is non-zero; setup failures are written there too (the AWS container exits 0
   after writing them; the emulator exits 1 so that the job FAILS, as the failure file makes the
   service report it; unconfirmed which of the two the service keys on).

Unlike the AWS container, the code runs in this process, not a child ``multiprocessing.Process``;
``requirements.txt`` files in the source are not installed (no network in local mode).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import json
import os
import runpy
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from byoc_executor.local import braket_contract as contract
from byoc_executor.local.s3_uris import split_s3_uri

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"  # where /opt/ml is in the emulator's job tree (sagemaker_contract)


class SetupError(Exception):
    """The job's code could not be fetched or loaded; the message goes to the failure file."""


def roots() -> tuple[Path, Path]:
    """(``/opt/ml``, ``/opt/braket``) of this job."""
    ml = Path(os.environ.get(BASE_DIR_ENV) or str(contract.OPT_ML))
    return ml, ml.parent / contract.OPT_BRAKET.name


def write_failure(ml_root: Path, text: str) -> None:
    path = ml_root / contract.FAILURE_FILE_SUBPATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def link_braket_root(ml_root: Path, braket_root: Path) -> None:
    try:
        os.symlink(ml_root, braket_root, target_is_directory=True)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise SetupError(f"Symlink failure.\n Exception: {e}") from e


def fetch_code(braket_root: Path) -> Path:
    """Download and unpack the job's code; returns the directory put on ``sys.path``."""
    uri = os.environ.get(contract.ENV_SCRIPT_S3_URI)
    entry = os.environ.get(contract.ENV_SCRIPT_ENTRY_POINT)
    if not uri:
        raise SetupError("No customer script specified")
    if not entry:
        raise SetupError("No customer entry point specified")
    code = braket_root / contract.CUSTOMER_CODE_SUBDIR
    original, extracted = code / "original", code / "extracted"
    original.mkdir(parents=True, exist_ok=True)
    extracted.mkdir(parents=True, exist_ok=True)
    import boto3  # the job's own AWS access, like the container's (AWS_ENDPOINT_URL: the emulator)

    try:
        bucket, key = split_s3_uri(uri)
        local = original / Path(key).name
        boto3.client("s3").download_file(bucket, key, str(local))
    except Exception as e:
        raise SetupError(f"Unable to download code.\nException: {e}") from e
    compression = (os.environ.get(contract.ENV_SCRIPT_COMPRESSION_TYPE) or "").strip().lower()
    try:
        if compression in ("gzip", "zip"):
            shutil.unpack_archive(str(local), str(extracted), format="gztar" if compression == "gzip" else "zip")
        else:
            shutil.copy(local, extracted)
    except Exception as e:
        raise SetupError(f"Got an exception while trying to unpack archive: {local} of type: {compression}.\nException: {e}") from e
    sys.path.append(str(extracted))
    return extracted


def load_entry_point(entry: str) -> Callable[..., Any]:
    """``module:function`` imported, or a module to run as ``__main__``."""
    if ":" in entry:
        module, _, function = entry.partition(":")
        return getattr(importlib.import_module(module), function)
    return lambda: runpy.run_module(entry, run_name="__main__")


def bound_hyperparameters(function: Callable[..., Any]) -> dict[str, Any]:
    """The hyperparameters as the function's keyword arguments, if they bind; else none."""
    hp_file = os.environ.get(contract.ENV_HP_FILE)
    if not hp_file or not os.path.exists(hp_file):
        return {}
    with open(hp_file) as f:
        hyperparameters = json.load(f)
    try:
        inspect.signature(function).bind(**hyperparameters)
    except TypeError:
        return {}
    annotations = inspect.getfullargspec(function).annotations
    return {name: annotations.get(name, str)(value) for name, value in hyperparameters.items()}


def run() -> int:
    """Set up and run the job's code. Returns the exit code."""
    ml_root, braket_root = roots()
    print("Beginning Setup", flush=True)
    try:
        link_braket_root(ml_root, braket_root)
        extracted = fetch_code(braket_root)
        function = load_entry_point(os.environ[contract.ENV_SCRIPT_ENTRY_POINT])
        kwargs = bound_hyperparameters(function)
    except Exception as e:
        text = str(e) if isinstance(e, SetupError) else f"{type(e).__name__}: {e}"
        print(text, flush=True)
        write_failure(ml_root, text)
        return 1
    print("Running Code As Process", flush=True)
    try:
        with _cwd(extracted):
            function(**kwargs)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code
    except BaseException as e:
        traceback.print_exc()
        write_failure(ml_root, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        return 1
    print("Code Run Finished", flush=True)
    return 0


@contextlib.contextmanager
def _cwd(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


if __name__ == "__main__":
    sys.exit(run())
