"""``byoc-executor jobs | cancel | result``: find, stop and collect jobs after the Covalent server is gone.

Each command reads the AWS settings the executor would use (``endpoint_url``, ``region``,
``profile``, ``credentials_file`` of ``[executors.byoc]`` in covalent.conf), which
``--endpoint-url``, ``--region``, ``--profile`` and ``--credentials-file`` override; on a loopback
endpoint (the emulator) dummy keys are used, as the executor does. The work is ``rescue.py``'s.

Exit statuses of ``result``: 0 the value was printed (or saved); 1 the electron raised, or its job
ended without a result; 2 no such job, not finished yet, or its result is gone; 3 refused: the
payload or the result failed verification (nothing was unpickled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pprint
import sys
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from botocore.exceptions import BotoCoreError

from byoc_executor import aws, rescue
from byoc_executor.errors import BYOCError, ResourceNotFoundError, ResultError
from byoc_executor.settings import Settings

EXIT_OK, EXIT_RAISED, EXIT_UNAVAILABLE, EXIT_REFUSED = 0, 1, 2, 3
_TARGET_KEYS = ("endpoint_url", "region", "profile", "credentials_file")


def add_target_arguments(parser: argparse.ArgumentParser, with_service: bool = True) -> None:
    """The flags every rescue command takes: where the jobs are, as the executor's settings say."""
    group = parser.add_argument_group("where the jobs are (default: [executors.byoc] of covalent.conf)")
    group.add_argument("--endpoint-url", default=None, help="one endpoint for every AWS service (the emulator's URL)")
    group.add_argument("--region", default=None, help="AWS region (default: the profile's, or AWS_DEFAULT_REGION)")
    group.add_argument("--profile", default=None, help="named profile of the AWS config files")
    group.add_argument("--credentials-file", default=None, help="shared credentials file instead of ~/.aws/credentials")
    if with_service:
        group.add_argument("--service", choices=rescue.SERVICES, default="", help="look at one job API only (default: both)")


def target_of(args: argparse.Namespace, region: str = "") -> aws.AWSTarget:
    from covalent._shared_files.config import get_config

    try:
        section = get_config("executors.byoc")
    except KeyError:
        section = {}
    values = {k: v for k, v in (section if isinstance(section, dict) else {}).items() if k in _TARGET_KEYS}
    for key in _TARGET_KEYS:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    if region and not values.get("region"):
        values["region"] = region  # the region a job's ARN names
    return aws.AWSTarget.of(Settings(**values))


def _services(args: argparse.Namespace) -> tuple[str, ...]:
    return (args.service,) if getattr(args, "service", "") else rescue.SERVICES


def _run(work: Callable[[], Awaitable[int]]) -> int:
    async def main() -> int:
        try:
            return await work()
        finally:
            await aws.close_clients()

    try:
        return asyncio.run(main())
    except (BYOCError, BotoCoreError) as e:
        print(f"byoc-executor: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE


# --- jobs ---------------------------------------------------------------------------------------------


def _when(t: datetime | None) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def _billable(job: rescue.JobRecord) -> str:
    if job.billable_seconds is not None:
        return f"{job.billable_seconds:.0f} s"
    if job.running and job.started:
        return f"({(datetime.now(timezone.utc) - job.started).total_seconds():.0f} s so far)"
    return "-"


def jobs_table(jobs: list[rescue.JobRecord]) -> str:
    """The table ``byoc-executor jobs`` prints: one line per job, the job id last (what the other commands take)."""
    rows = [("SERVICE", "NAME", "DISPATCH", "NODE", "STATE", "STARTED", "BILLABLE", "JOB")]
    for j in jobs:
        rows.append((j.service, j.job_name, j.dispatch, j.node, j.raw_status, _when(j.started), _billable(j), j.job_id))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def run_jobs(args: argparse.Namespace) -> int:
    async def work() -> int:
        jobs = await rescue.list_jobs(target_of(args), _services(args), dispatch=args.dispatch or "", running=args.running)
        if args.json:
            print(json.dumps([j.as_json() for j in jobs], indent=2))
        elif jobs:
            print(jobs_table(jobs))
        else:
            print("no byoc-executor jobs found" + (f" for dispatch {args.dispatch}" if args.dispatch else "")
                  + (" running" if args.running else ""), file=sys.stderr)
        return EXIT_OK

    return _run(work)


# --- cancel -------------------------------------------------------------------------------------------


def run_cancel(args: argparse.Namespace) -> int:
    if bool(args.job) == bool(args.dispatch):
        print("byoc-executor cancel: give either a JOB or --dispatch D", file=sys.stderr)
        return EXIT_UNAVAILABLE

    async def work() -> int:
        if args.job:
            target = target_of(args, rescue.region_of(args.job))
            service, job_id = await rescue.resolve(target, args.job, args.service)
            wanted = [(service, job_id)]
        else:
            target = target_of(args)
            running = await rescue.list_jobs(target, _services(args), dispatch=args.dispatch, running=True, details=False)
            wanted = [(j.service, j.job_id) for j in running]
            if not wanted:
                print(f"no running byoc-executor jobs for dispatch {args.dispatch}")
        failed = 0
        for service, job_id in wanted:
            try:
                status = await rescue.cancel(target, service, job_id)
            except (BYOCError, BotoCoreError) as e:
                print(f"{service} job {job_id}: could not cancel: {e}", file=sys.stderr)
                failed += 1
                continue
            print(f"{service} job {job_id}: {status.raw_status}")
        return EXIT_UNAVAILABLE if failed else EXIT_OK

    return _run(work)


# --- result -------------------------------------------------------------------------------------------


def run_result(args: argparse.Namespace) -> int:
    async def work() -> int:
        target = target_of(args, rescue.region_of(args.job))
        try:
            service, job_id = await rescue.resolve(target, args.job, args.service)
            collected = await rescue.collect(target, service, job_id)
        except rescue.JobNotFinished as e:
            print(f"byoc-executor: {e}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        except ResultError as e:
            print(f"byoc-executor: refused: {e}", file=sys.stderr)
            return EXIT_REFUSED
        except (rescue.JobNotFound, ResourceNotFoundError) as e:
            print(f"byoc-executor: {e}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        return _report(args, service, collected)

    return _run(work)


def _report(args: argparse.Namespace, service: str, collected: rescue.Collected) -> int:
    status, outcome = collected.status, collected.outcome
    if args.show_output:
        sys.stderr.write(outcome.stdout)
        sys.stderr.write(outcome.stderr)
    if not outcome.has_result:
        reason = status.failure_reason or "(the service gave no reason)"
        print(f"{service} job {status.job_id} ended {status.raw_status} without a result at {status.results_uri}: {reason}", file=sys.stderr)
        return EXIT_RAISED if status.raw_status else EXIT_UNAVAILABLE
    if outcome.tasks is not None:
        return _report_group(args, service, status, outcome.tasks)
    if not outcome.ok:
        exc = outcome.exception or {}
        print(f"{service} job {status.job_id} ended {status.raw_status}: the electron raised {exc.get('type')}: {exc.get('message')}",
              file=sys.stderr)
        sys.stderr.write(exc.get("traceback", ""))
        return EXIT_RAISED
    return _write_value(args, service, status, _deserialized(outcome.value))


def _report_group(args: argparse.Namespace, service: str, status: Any, tasks: list[dict]) -> int:
    """A task group's job (every job the Covalent server submits: a group of one or more electrons).

    One electron: its value, as for a single call. Several: each node's value under its node id
    (``--out`` saves ``{node id: value}``); any electron that raised or did not run makes it exit 1.
    """
    from covalent.executor.utils.serialize import deserialize_node_asset  # what the executor uses

    values: dict[int, Any] = {}
    failed = False
    for task in tasks:
        node = task["node_id"]
        if args.show_output:
            sys.stderr.write(task.get("stdout", "") + task.get("stderr", ""))
        if task["status"] == "COMPLETED":
            values[node] = _deserialized(deserialize_node_asset(task["output"], "output"))
            continue
        failed = True
        exc = task.get("exception") or {}
        if task["status"] == "NOT_RUN":
            print(f"{service} job {status.job_id}: node {node} did not run (an electron before it in the group raised)", file=sys.stderr)
        else:
            print(f"{service} job {status.job_id}: node {node} raised {exc.get('type')}: {exc.get('message')}", file=sys.stderr)
            sys.stderr.write(exc.get("traceback", ""))
    if len(tasks) == 1:
        if failed:
            return EXIT_RAISED
        return _write_value(args, service, status, values[tasks[0]["node_id"]])
    if values:
        _write_value(args, service, status, values)
    return EXIT_RAISED if failed else EXIT_OK


def _write_value(args: argparse.Namespace, service: str, status: Any, value: Any) -> int:
    if args.out:
        import cloudpickle

        with open(args.out, "wb") as f:
            cloudpickle.dump(value, f)
        print(f"{service} job {status.job_id}: value saved to {args.out} (a pickle)")
    else:
        print(pprint.pformat(value))
    return EXIT_OK


def _deserialized(value: Any) -> Any:
    # The task is Covalent's wrapper_fn: its return value is a TransportableObject.
    get = getattr(value, "get_deserialized", None)
    return get() if callable(get) else value
