"""The ``byoc-executor`` command.

Subcommands:
    local   serve the Braket + SageMaker job emulator (with moto for S3, Logs, STS) on
            ``http://127.0.0.1:PORT`` until SIGINT or SIGTERM.
    doctor  check the executor's settings, credentials, bucket and job API (see doctor.py).

Each subcommand is a ``_add_<name>(subparsers)`` that registers its parser and sets ``func``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def _run_local(args: argparse.Namespace) -> int:
    # Imported here: moto and werkzeug are the "local" extra, not needed by other subcommands.
    from byoc_executor.local import Emulator

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    emulator = Emulator(
        host=args.host, port=args.port, root=args.root, phase_delay=args.phase_delay, kill_grace=args.kill_grace
    )
    try:
        emulator.start()
        print(f"byoc-executor local emulator listening on {emulator.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
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
    parser.set_defaults(func=_run_local)


def build_parser() -> argparse.ArgumentParser:
    """The ``byoc-executor`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="byoc-executor", description="byoc-executor command-line tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_local(subparsers)
    from byoc_executor import doctor

    doctor.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``byoc-executor`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
