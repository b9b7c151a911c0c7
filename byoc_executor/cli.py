"""The ``byoc-executor`` command.

Subcommands:
    local   serve the Braket + SageMaker job emulator (with moto for S3, Logs, STS) on
            ``http://127.0.0.1:PORT`` until SIGINT or SIGTERM; ``--fault-rate API=RATE`` makes
            that share of the clients' requests to API fail (see ``local/faults.py``).
    doctor  check the executor's settings, credentials, bucket and job API (see doctor.py).

Each subcommand is a ``_add_<name>(subparsers)`` that registers its parser and sets ``func``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path


def _fault_rate(text: str) -> tuple[str, float]:
    """``s3=0.1`` -> ("s3", 0.1), for ``--fault-rate``."""
    api, sep, rate = text.partition("=")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if not sep or not api or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected API=RATE with RATE in [0, 1] (e.g. s3=0.1), not {text!r}")
    return api, value


def _run_local(args: argparse.Namespace) -> int:
    # Imported here: moto and werkzeug are the "local" extra, not needed by other subcommands.
    try:
        from byoc_executor.local import Emulator
        from byoc_executor.local.faults import FaultPlan
    except ModuleNotFoundError as e:
        missing = (e.name or "").partition(".")[0]
        if missing in ("", "byoc_executor"):
            raise  # not a missing dependency: a broken install
        print(f'byoc-executor local needs the "local" extra ({missing} is missing): pip install "byoc-executor[local]"', file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    launcher = None
    if args.image:
        from byoc_executor.local.container_launcher import ContainerLauncher

        launcher = ContainerLauncher(args.image, tool=args.container_tool)
    from byoc_executor.local.aws_profile import profile

    try:
        overrides = {"image_gb": args.image_gb} if args.image_gb is not None else {}
        timing = profile(args.profile, args.time_scale, **overrides)
    except ValueError as e:
        print(f"byoc-executor local: {e}", file=sys.stderr)
        return 2
    emulator = Emulator(
        host=args.host,
        port=args.port,
        root=args.root,
        launcher=launcher,
        phase_delay=args.phase_delay,
        kill_grace=args.kill_grace,
        profile=timing,
    )
    if args.fault_rate:
        emulator.faults = FaultPlan(dict(args.fault_rate), seed=args.fault_seed, mode=args.fault_mode)
    try:
        emulator.start()
        print(f"byoc-executor local emulator listening on {emulator.url}", flush=True)
        if launcher is not None:
            print(f"jobs run in the image {args.image} ({launcher.tool})", flush=True)
        if timing is not None:
            print(
                f"AWS profile at {timing.time_scale:g}x: jobs take minutes of AWS time to start, requests are "
                f"limited per account; usage at {emulator.url}/_byoc/usage",
                flush=True,
            )
        if emulator.faults is not None:
            rates = ", ".join(f"{api} {rate:g}" for api, rate in args.fault_rate)
            print(
                f"injecting faults ({args.fault_mode}, seed {args.fault_seed}): {rates}; "
                f"counters at {emulator.url}/_byoc/faults",
                flush=True,
            )
        while not stop.wait(1.0):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    with contextlib.suppress(BrokenPipeError):  # whoever started us may have stopped reading
        print("byoc-executor local emulator stopped", flush=True)
    return 0


def _add_local(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "local",
        help="serve the local Braket/SageMaker job emulator",
        description="Serve the Braket hybrid-job and SageMaker training-job APIs (with moto for S3, "
        "CloudWatch Logs and STS) on one loopback endpoint; use it with endpoint_url=<URL>. "
        "Stops cleanly on SIGINT or SIGTERM, killing running jobs.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default: 127.0.0.1)")
    parser.add_argument("--root", type=Path, default=None, help="directory for job trees (default: a temporary one)")
    parser.add_argument("--phase-delay", type=float, default=0.5, help="seconds per queued/starting/downloading/uploading phase")
    parser.add_argument("--kill-grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL on stop")
    parser.add_argument(
        "--image",
        default=None,
        help="run each job in this job image (built from container/) instead of a local process; "
        "with docker or podman if one answers, else buildah",
    )
    parser.add_argument(
        "--container-tool", choices=["docker", "podman", "buildah"], default=None, help="the tool that runs --image (default: detected)"
    )
    timing = parser.add_argument_group(
        "AWS profile", "Play AWS's timing and limits (local/aws_profile.py): minutes to start a job, log lines "
        "seconds late, a job not found for a moment after its create, per-account request and instance quotas. "
        "What clients asked and what jobs cost, in AWS seconds: /_byoc/usage.",
    )
    timing.add_argument("--profile", choices=("none", "aws"), default="none",
                        help="none: --phase-delay per phase, no limits (default); aws: AWS's timing and limits")
    timing.add_argument("--time-scale", type=float, default=1.0, metavar="N",
                        help="play AWS N times faster (60: a 3-minute start takes 3 s); give the executor "
                        "BYOC_TIME_SCALE=N too (default: 1)")
    timing.add_argument("--image-gb", type=float, default=None, metavar="GB",
                        help="the job image's size, which Downloading grows with (default: 0.85, the CPU image)")
    faults = parser.add_argument_group(
        "fault injection", "Fail a share of the clients' requests (never the emulator's own) with each API's real "
        "throttling error or a 500/503. Change or read it at run time at /_byoc/faults.",
    )
    faults.add_argument(
        "--fault-rate", type=_fault_rate, action="append", default=[], metavar="API=RATE",
        help="share of requests to API (s3, braket, sagemaker, logs, sts) that fail; repeat per API",
    )
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of the fault decisions (default: 0)")
    faults.add_argument(
        "--fault-mode", choices=("before", "after", "mixed"), default="before",
        help="before: refuse the request; after: serve it, then lose its answer (a 5xx); mixed: half each",
    )
    parser.set_defaults(func=_run_local)


def _add_jobs(subparsers: argparse._SubParsersAction) -> None:
    from byoc_executor import rescue_cli

    parser = subparsers.add_parser(
        "jobs",
        help="list byoc-executor's jobs (found by their tags), even with no Covalent server running",
        description="List the Braket hybrid jobs and SageMaker training jobs byoc-executor started (tagged "
        "byoc:executor): service, name, dispatch, node, state, start time, billable time, and the job id "
        "that `cancel` and `result` take.",
    )
    parser.add_argument("--dispatch", default="", metavar="D", help="only the jobs of dispatch D")
    parser.add_argument("--running", action="store_true", help="only jobs that have not ended")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rescue_cli.add_target_arguments(parser)
    parser.set_defaults(func=rescue_cli.run_jobs)


def _add_cancel(subparsers: argparse._SubParsersAction) -> None:
    from byoc_executor import rescue_cli

    parser = subparsers.add_parser(
        "cancel",
        help="cancel a job, or every running job of a dispatch",
        description="Cancel a Braket hybrid job (CancelJob) or stop a SageMaker training job (StopTrainingJob): "
        "JOB is a Braket job ARN or name, or a SageMaker training job name or ARN; --dispatch D cancels every "
        "running job of dispatch D.",
    )
    parser.add_argument("job", nargs="?", default="", metavar="JOB", help="the job's ARN (Braket) or name")
    parser.add_argument("--dispatch", default="", metavar="D", help="cancel every running job of dispatch D")
    rescue_cli.add_target_arguments(parser)
    parser.set_defaults(func=rescue_cli.run_cancel)


def _add_result(subparsers: argparse._SubParsersAction) -> None:
    from byoc_executor import rescue_cli

    parser = subparsers.add_parser(
        "result",
        help="download, verify and print a finished job's value (or its exception)",
        description="Download a finished job's result, verify it as the executor does (the payload against the "
        "digest the job's request pinned, then the result with the key in that payload) and print its value, or "
        "save it with --out FILE as a pickle. For an electron that raised, print the exception's type, message and "
        "remote traceback and exit 1. Exit 2: no such job, not finished, or its result is gone; 3: refused.",
    )
    parser.add_argument("job", metavar="JOB", help="the job's ARN (Braket) or name")
    parser.add_argument("--out", default="", metavar="FILE", help="save the value to FILE as a pickle instead of printing it")
    parser.add_argument("--show-output", action="store_true", help="also print what the task printed (to stderr)")
    rescue_cli.add_target_arguments(parser)
    parser.set_defaults(func=rescue_cli.run_result)


def build_parser() -> argparse.ArgumentParser:
    """The ``byoc-executor`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="byoc-executor", description="byoc-executor command-line tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_local(subparsers)
    from byoc_executor import doctor

    doctor.add_parser(subparsers)
    _add_jobs(subparsers)
    _add_cancel(subparsers)
    _add_result(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``byoc-executor`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
