"""The hosts of one job attempt: one process per instance (``algo-1`` .. ``algo-N``).

A job with ``InstanceCount`` (SageMaker) or ``instanceCount`` (Braket) above 1 runs its image
once per instance, each with its own ``/opt/ml`` tree and a ``resourceconfig.json`` that names
that host (``current_host``) and all of them (``hosts``). Each host logs to its own stream,
``<job>/algo-<i>-<epoch>``, as the real services' awslogs driver does. :class:`HostProcess` is
one of them; :func:`judge_hosts` turns their exits into the job's ending.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from byoc_executor.local.launchers import Launcher, LaunchSpec, RunningJob
from byoc_executor.local.logs import LogShipper, Tail, pump_lines

LEADER = "algo-1"


def host_names(count: int) -> list[str]:
    """``["algo-1", ..., "algo-<count>"]``: the names SageMaker gives a job's instances."""
    return [f"algo-{i}" for i in range(1, max(1, count) + 1)]


def resource_config(host: str, hosts: list[str], instance_type: str) -> dict[str, Any]:
    """The ``/opt/ml/input/config/resourceconfig.json`` of ``host``."""
    return {
        "current_host": host,
        "hosts": list(hosts),
        "current_group_name": "homogeneousCluster",
        "current_instance_type": instance_type,
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": instance_type, "hosts": list(hosts)}
        ],
        "network_interface_name": "eth0",
    }


def describe_exit(code: int) -> str:
    """``"code 1"``, or ``"code -9 (killed by SIGKILL)"`` for a signal."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"code {code} (killed by {name})"
    return f"code {code}"


class HostProcess:
    """One host's process: started through the launcher, its output shipped to its log stream.

    Args:
        host: ``algo-<i>``.
        ml_root: that host's ``/opt/ml`` (where its failure file is).
        shipper: the host's log stream.
        on_exit: called (from the reaper thread) when the process exits.
    """

    def __init__(self, host: str, ml_root: Path, shipper: LogShipper, on_exit: Callable[[], None]):
        self.host = host
        self.ml_root = ml_root
        self.shipper = shipper
        self.tail = Tail()
        self.process: RunningJob | None = None
        self.code: int | None = None
        self.exited_at: float | None = None
        self.exited = threading.Event()
        self._on_exit = on_exit
        self._pumps: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, launcher: Launcher, spec: LaunchSpec) -> None:
        """Launch the process and start pumping its output.

        Raises:
            OSError: the launcher could not start it (the shipper is closed first).
        """
        self.shipper.start()
        try:
            self.process = launcher.launch(spec)
        except OSError:
            self.shipper.close()
            raise
        self._pumps = [pump_lines(s, [self.shipper.put, self.tail]) for s in (self.process.stdout, self.process.stderr)]
        threading.Thread(target=self._reap, name=f"reap-{spec.job_name}-{self.host}", daemon=True).start()

    def _reap(self) -> None:
        assert self.process is not None
        self.code = self.process.wait()
        self.exited_at = time.monotonic()
        self.exited.set()
        self._on_exit()

    def alive(self) -> bool:
        return self.process is not None and not self.exited.is_set()

    def signal(self, signum: int) -> None:
        if self.alive():
            self.process.signal(signum)  # type: ignore[union-attr]

    def finish(self) -> None:
        """Wait for the output to drain and every line to reach CloudWatch."""
        self.exited.wait()
        for pump in self._pumps:
            pump.join()
        self.shipper.close()

    def failure_text(self, limit: int) -> str | None:
        """The host's failure file (``/opt/ml/output/failure``), cut to ``limit``; None if absent or blank."""
        failure_file = self.ml_root / "output" / "failure"
        if failure_file.is_file():
            text = failure_file.read_text(errors="replace")[:limit]
            if text.strip():
                return text
        return None

    def failure_reason(self, several: bool, limit: int = 1024) -> str:
        """Why this host failed: its failure file, else its exit code and last log lines."""
        text = self.failure_text(limit)
        if text is not None:
            return text
        where = f" on {self.host}" if several else ""
        reason = f"AlgorithmError: the job's process{where} exited with {describe_exit(self.code if self.code is not None else -1)}"
        lines = self.tail.lines()
        if lines:
            reason += ". Last log lines: " + " | ".join(lines)
        return reason


def terminate(hosts: list[HostProcess], grace: float) -> None:
    """SIGTERM every live host, then SIGKILL those still alive after ``grace`` seconds."""
    for host in hosts:
        host.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for host in hosts:
        host.exited.wait(max(0.0, deadline - time.monotonic()))
    for host in hosts:
        host.signal(signal.SIGKILL)


def first_failure(hosts: list[HostProcess]) -> HostProcess | None:
    """The host that failed first (by exit time), or None if every host exited 0."""
    failed = [h for h in hosts if h.code != 0]
    failed.sort(key=lambda h: h.exited_at if h.exited_at is not None else float("inf"))
    return failed[0] if failed else None
