"""How the emulator starts a job's "container": the launcher seam.

A launcher turns a :class:`LaunchSpec` (the command the image would run, its environment, the
job's directory tree) into a running job it can signal and wait for. The job lifecycle in
``jobs.py`` knows only this interface. :class:`ProcessLauncher` runs the command as a local
process in its own process group; a container launcher can run the same command inside a built
image (``buildah run``) by mapping ``LaunchSpec.tree`` into the container.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol


@dataclass(frozen=True)
class LaunchSpec:
    """What to start for one job.

    Attributes:
        job_name: the job's name (for labels and diagnostics).
        service: "braket" or "sagemaker".
        command: argv, e.g. ``[python, byoc_entry.py, "train"]``.
        env: the complete environment of the job (nothing is inherited).
        tree: the job's private directory; the ``/opt/ml`` and ``/opt/braket`` trees live in it.
        image: the job's own image URI (``TrainingImage`` / ``containerImage.uri``), for a
            container launcher that has it locally.
    """

    job_name: str
    service: str
    command: list[str]
    env: dict[str, str] = field(repr=False)
    tree: Path
    image: str | None = None


class RunningJob(Protocol):
    """A started job: its output streams, its id, and how to signal and reap it."""

    pid: int | None
    stdout: IO[bytes]
    stderr: IO[bytes]

    def wait(self) -> int:
        """Block until the job's main process exits and return its exit code (negative: signal)."""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every process of the job; a job already gone is not an error."""


class Launcher(Protocol):
    """Starts jobs. Implementations must be thread-safe: jobs start from many threads."""

    def launch(self, spec: LaunchSpec) -> RunningJob:
        """Start the job described by ``spec``.

        Raises:
            OSError: the command could not be started (becomes the job's failure reason).
        """


class ProcessJob:
    """A job running as a local process group (the group stands in for the container)."""

    def __init__(self, popen: subprocess.Popen):
        self._popen = popen
        self.pid: int | None = popen.pid
        self.stdout: IO[bytes] = popen.stdout  # type: ignore[assignment]
        self.stderr: IO[bytes] = popen.stderr  # type: ignore[assignment]

    def wait(self) -> int:
        """Wait for the main process, then kill what is left of its group, then reap it.

        A container ends when its main process does: leftover children would otherwise hold the
        output pipes open. ``WNOWAIT`` keeps the process unreaped while the group is signalled,
        so its pid (the group id) cannot have been reused by then.
        """
        try:
            os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # already reaped elsewhere; Popen.wait() still has the code
            pass
        else:
            self.signal(signal.SIGKILL)
        return self._popen.wait()

    def signal(self, signum: int) -> None:
        """Signal the whole process group."""
        if self._popen.returncode is not None:
            return  # reaped: the group id may belong to someone else now
        try:
            os.killpg(self._popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone (or a zombie leader with no members left)


JOB_NICENESS = 10


class ProcessLauncher:
    """Runs each job as ``LaunchSpec.command`` in a new session (own process group), cwd = tree.

    ``train_command`` is what a job's image would run (``train``); a plain ProcessLauncher has
    no image, so jobs started through it give their command themselves (see ``byoc_image.py``
    for the byoc-executor image as a process, and ``braket_script_mode.py``).
    """

    train_command: list[str] = ["train"]

    def refusal(self, service: str, request: dict) -> str | None:
        """Why this launcher cannot run the job, or None: a plain process runs whatever it is given."""
        return None

    def launch(self, spec: LaunchSpec) -> ProcessJob:
        """Start the job's process.

        Raises:
            OSError: the executable is missing or not runnable.
        """
        popen = subprocess.Popen(
            spec.command,
            env=spec.env,
            cwd=spec.tree,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        with contextlib.suppress(OSError):
            # Below the Covalent server and the emulator, which share this machine's cores with
            # every job: a burst of job processes starting (each imports its task's packages)
            # must not starve the processes that submit and follow them.
            os.setpriority(os.PRIO_PROCESS, popen.pid, JOB_NICENESS)
        return ProcessJob(popen)
