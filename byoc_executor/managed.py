"""Covalent's managed execution: a task group, one or several electrons, as one AWS job.

Covalent 0.240's runner (``covalent_dispatcher/_core/runner_ng.py``) hands an executor that has
``SUPPORTS_MANAGED_EXECUTION`` a *task group*: with task packing on
(``sdk.task_packing``/``COVALENT_ENABLE_TASK_PACKING``) an electron together with the helper nodes
Covalent generated around it; without, one node. It goes:

1. ``get_upload_uri(group, key)`` for each asset; Covalent copies there the group's functions and
   hooks and the outputs of the nodes the group reads (``file://`` URIs of a staging directory of
   this process, :func:`staging_dir`);
2. ``send(task_specs, resources, group)``: :func:`assemble` reads those assets (bytes, never
   unpickled here), and the group runs as one job (``pipeline.launch``), or, if every node is one
   of Covalent's helpers, right here (``helper_nodes``);
3. ``poll(group, sent)``: follows the job to its end (``pipeline.follow``);
4. ``receive(group, polled)``, on a fresh executor: fetches and verifies the job's result and
   writes each node's output, stdout and stderr as files whose URIs Covalent copies into its store
   (:func:`task_updates`).

In the job, the entry script runs the tasks in order in one process (``container/byoc_entry.py``,
``run_group``): a task reads its inputs from the payload or from an earlier task's output; the
first task that raises fails itself, the tasks after it do not run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from covalent._shared_files.schemas.asset import AssetUpdate
from covalent._shared_files.util_classes import RESULT_STATUS
from covalent.executor.schemas import ResourceMap, TaskSpec, TaskUpdate
from covalent.executor.utils.serialize import deserialize_node_asset, serialize_node_asset

from byoc_executor import helper_nodes

STAGING_ROOT = Path(tempfile.gettempdir()) / "byoc-executor-groups"


def staging_dir(dispatch_id: str, group_id: int | str) -> Path:
    """Where this process stages one task group's assets (in, from Covalent; out, to it)."""
    return STAGING_ROOT / str(dispatch_id) / f"group-{group_id}"


def upload_uri(dispatch_id: str, group_id: int | str, object_key: str) -> str:
    path = staging_dir(dispatch_id, group_id) / "in" / object_key
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def _read(uri: str) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise ValueError(f"an asset at {uri!r}: the executor reads only file:// assets of its own staging directory")
    return Path(unquote(parsed.path)).read_bytes()


def assemble(task_specs: list[TaskSpec], resources: ResourceMap) -> tuple[list[dict], dict[int, bytes]]:
    """The group's tasks, in order, and the outputs of outside nodes they read: Covalent's bytes."""
    tasks = [
        {
            "node_id": spec.electron_id,
            "function": _read(resources.functions[spec.electron_id]),
            "hooks": _read(resources.hooks[spec.electron_id]) if resources.hooks.get(spec.electron_id) else b"",
            "args": list(spec.args),
            "kwargs": dict(spec.kwargs),
        }
        for spec in task_specs
    ]
    inputs = {int(node): _read(uri) for node, uri in resources.inputs.items()}
    return tasks, inputs


def all_helpers(tasks: list[dict]) -> bool:
    """Whether every task of the group is one of Covalent's helper nodes (so it needs no job)."""
    return bool(tasks) and all(helper_nodes.helper_kind(deserialize_node_asset(t["function"], "function")) for t in tasks)


def run_helpers(tasks: list[dict], inputs: dict[int, bytes]) -> list[dict]:
    """Run a group of helper nodes here, in order: each task's outcome as a job's would be.

    Raises:
        helper_nodes.HelperUnavailable: an input cannot be unpickled here (run it as a job).
    """
    outputs: dict[int, Any] = {}
    outcomes: list[dict] = []
    failed = None
    for task in tasks:
        node = task["node_id"]
        if failed is not None:
            outcomes.append(_not_run(node, failed))
            continue
        function = deserialize_node_asset(task["function"], "function")

        def value(source: int) -> Any:
            return outputs[source] if source in outputs else deserialize_node_asset(inputs[source], "output")

        try:
            output = helper_nodes.run_helper(function, [value(a) for a in task["args"]], {k: value(v) for k, v in task["kwargs"].items()})
        except helper_nodes.HelperUnavailable:
            raise
        except Exception as e:  # the helper's own failure (x[5] of a pair) is the node's error
            failed = node
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            outcomes.append({"node_id": node, "status": "FAILED", "output": None, "stdout": "", "stderr": tb,
                             "exception": {"type": type(e).__name__, "message": str(e), "traceback": tb}})
            continue
        outputs[node] = output
        outcomes.append({"node_id": node, "status": "COMPLETED", "output": serialize_node_asset(output, "output"),
                         "stdout": "", "stderr": "", "exception": None})
    return outcomes


def _not_run(node: int, failed: int) -> dict:
    message = f"byoc executor: not run: node {failed} of the same task group failed before it\n"
    return {"node_id": node, "status": "NOT_RUN", "output": None, "stdout": "", "stderr": message, "exception": None}


def task_updates(dispatch_id: str, group_id: int | str, node_ids: list[int], outcomes: list[dict] | None, stderr_all: str = "") -> list[TaskUpdate]:
    """Covalent's TaskUpdates for the group: each node's output, stdout and stderr as files here.

    Args:
        outcomes: the per-task outcomes (a job's or ``run_helpers``'); None when no node produced
            one (the job failed before or outside the tasks): every node FAILED, with ``stderr_all``.
        stderr_all: the executor's own lines (``[byoc]`` progress, the reason of a failure), added
            to every node's stderr.
    """
    out = staging_dir(dispatch_id, group_id) / "out"
    out.mkdir(parents=True, exist_ok=True)
    by_node = {o["node_id"]: o for o in outcomes or []}
    updates = []
    for node in node_ids:
        outcome = by_node.get(node)
        if outcome is None:
            status, output, stdout, stderr = RESULT_STATUS.FAILED, None, "", ""
        else:
            status = RESULT_STATUS.COMPLETED if outcome["status"] == "COMPLETED" else RESULT_STATUS.FAILED
            output, stdout, stderr = outcome.get("output"), outcome.get("stdout", ""), outcome.get("stderr", "")
        assets = {
            "stdout": _asset(out / f"stdout-{node}.txt", stdout.encode()),
            "stderr": _asset(out / f"stderr-{node}.txt", (stderr_all + stderr).encode()),
        }
        if output is not None:
            assets["output"] = _asset(out / f"output-{node}.pkl", output)
        updates.append(TaskUpdate(dispatch_id=dispatch_id, node_id=node, status=status, assets=assets))
    return updates


# What the executor had to say about a group that Covalent ends CANCELLED: poll() raises
# TaskCancelledError, and Covalent then hands receive() nothing but None.
_cancel_notes: dict[tuple[str, str], str] = {}


def note_cancelled(dispatch_id: str, group_id: int | str, text: str) -> None:
    _cancel_notes[(str(dispatch_id), str(group_id))] = text


def cancelled_updates(dispatch_id: str, group_id: int | str, node_ids: list[int]) -> list[TaskUpdate]:
    """Every node CANCELLED, with the executor's note (if any) as its stderr."""
    note = _cancel_notes.pop((str(dispatch_id), str(group_id)), "")
    if not note:
        return [TaskUpdate(dispatch_id=dispatch_id, node_id=n, status=RESULT_STATUS.CANCELLED, assets={}) for n in node_ids]
    out = staging_dir(dispatch_id, group_id) / "out"
    out.mkdir(parents=True, exist_ok=True)
    return [
        TaskUpdate(dispatch_id=dispatch_id, node_id=n, status=RESULT_STATUS.CANCELLED,
                   assets={"stderr": _asset(out / f"stderr-{n}.txt", note.encode())})
        for n in node_ids
    ]


def _asset(path: Path, data: bytes) -> AssetUpdate:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # durable before the S3 copy may go: the value is safe on this disk
    return AssetUpdate(remote_uri=path.as_uri(), size=len(data))


def sweep(max_age: float = 6 * 3600.0) -> None:
    """Remove staged groups older than ``max_age`` seconds: Covalent copied their outputs long ago."""
    import time

    if not STAGING_ROOT.is_dir():
        return
    for dispatch in STAGING_ROOT.iterdir():
        for group in dispatch.iterdir() if dispatch.is_dir() else ():
            try:
                if time.time() - group.stat().st_mtime > max_age:
                    shutil.rmtree(group, ignore_errors=True)
            except OSError:
                pass
        try:
            dispatch.rmdir()  # only if empty
        except OSError:
            pass


def forget(dispatch_id: str, group_id: int | str) -> None:
    """Remove the group's staged inputs (its outputs stay until Covalent has copied them)."""
    shutil.rmtree(staging_dir(dispatch_id, group_id) / "in", ignore_errors=True)
