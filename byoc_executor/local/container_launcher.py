"""Run emulated jobs inside the built job image, with docker, podman or buildah.

:class:`ContainerLauncher` implements the :class:`~byoc_executor.local.launchers.Launcher`
seam: where :class:`~byoc_executor.local.launchers.ProcessLauncher` runs the entry script as a
local process, this runs the image's own ``train`` command (what SageMaker and Braket start), so a
local job exercises the very image that will run in AWS.

The job's directory tree is mounted into the container at the SAME path, so ``BYOC_ML_ROOT``,
``AMZN_BRAKET_*`` paths, ``HOME`` and ``TMPDIR`` mean the same inside and out. The container
shares the host's network (``--network host``): the job reaches the emulator's S3 and Logs at
``AWS_ENDPOINT_URL`` on loopback.

Tools, in the order :func:`detect_tool` tries them:
    docker, podman   ``<tool> run --rm --init --network host -v TREE:TREE -e ... IMAGE train``;
                     only if ``<tool> info`` answers (a client without an engine does not count).
                     Signals go through ``<tool> kill --signal``: killing the client would not stop
                     the container.
    buildah          ``buildah from IMAGE`` once per job, ``buildah run --isolation chroot
                     --network host -v TREE:TREE --env ... CTR -- train``, ``buildah rm CTR`` when
                     the job ends. ``buildah run`` and the job's processes share one process group
                     (chroot isolation has no PID namespace), so signalling the group reaches them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import uuid
from typing import IO

from byoc_executor.local.launchers import LaunchSpec

TOOLS = ("docker", "podman", "buildah")
# Host-specific variables that must not override the image's own (its PATH finds its Python).
_HOST_ONLY_ENV = frozenset({"PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONHOME", "VIRTUAL_ENV"})
_INFO_TIMEOUT = 15.0
_CLEANUP_TIMEOUT = 60.0


def detect_tool() -> str:
    """The first usable container tool: a docker or podman whose ``info`` answers, else buildah.

    Raises:
        OSError: none of them is usable; says what was tried.
    """
    tried = []
    for tool in ("docker", "podman"):
        if shutil.which(tool) is None:
            tried.append(f"{tool}: not installed")
            continue
        try:
            answer = subprocess.run([tool, "info"], capture_output=True, timeout=_INFO_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            tried.append(f"{tool}: `{tool} info` did not answer in {_INFO_TIMEOUT:.0f}s")
            continue
        if answer.returncode == 0:
            return tool
        tried.append(f"{tool}: `{tool} info` failed (no engine running?)")
    if shutil.which("buildah") is not None:
        return "buildah"
    tried.append("buildah: not installed")
    raise OSError("no container tool can run the job image: " + "; ".join(tried) + ". Install buildah (apt-get install buildah) or start a Docker engine")


def container_env(spec: LaunchSpec) -> dict[str, str]:
    """The job's environment as the container gets it: the host's PATH and friends left out."""
    return {k: v for k, v in spec.env.items() if k not in _HOST_ONLY_ENV}


class ContainerJob:
    """A job running in a container; ``wait()`` also removes the container."""

    def __init__(self, popen: subprocess.Popen, tool: str, container: str):
        self._popen = popen
        self._tool = tool
        self._container = container
        self._cleaned = False
        self._lock = threading.Lock()
        self.pid: int | None = popen.pid
        self.stdout: IO[bytes] = popen.stdout  # type: ignore[assignment]
        self.stderr: IO[bytes] = popen.stderr  # type: ignore[assignment]

    def wait(self) -> int:
        """Wait for the container's main process, kill what is left, remove the container.

        Returns:
            The exit code; negative when the job was killed by a signal.
        """
        if self._tool == "buildah":
            try:  # keep the leader unreaped while its group is signalled (see ProcessJob.wait)
                os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                pass
            else:
                self._killpg(signal.SIGKILL)
        code = self._popen.wait()
        self._cleanup()
        return code

    def signal(self, signum: int) -> None:
        """Signal every process of the job; a job already gone is not an error."""
        if self._popen.returncode is not None:
            return
        if self._tool == "buildah":
            self._killpg(signum)
            return
        # docker/podman: the client is not the container; the engine signals the container's init.
        subprocess.run(
            [self._tool, "kill", "--signal", signal.Signals(signum).name, self._container],
            capture_output=True, stdin=subprocess.DEVNULL, timeout=_CLEANUP_TIMEOUT,
        )

    def _killpg(self, signum: int) -> None:
        try:
            os.killpg(self._popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _cleanup(self) -> None:
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
        if self._tool == "buildah":
            remove_buildah_container(self._container)
        # docker/podman: `run --rm` removed it.


def remove_buildah_container(container: str) -> None:
    """``buildah rm`` a working container; one already gone is not an error."""
    subprocess.run(["buildah", "rm", container], capture_output=True, stdin=subprocess.DEVNULL, timeout=_CLEANUP_TIMEOUT)


class ContainerLauncher:
    """Starts each job as the image's ``train`` command in a container.

    Args:
        image: the job image, e.g. ``localhost/byoc-executor:dev`` or an ECR URI that the tool
            can pull.
        tool: "docker", "podman" or "buildah"; None picks one at the first launch
            (:func:`detect_tool`).

    No I/O happens here: the tool is detected, and the image found, when the first job starts.
    """

    def __init__(self, image: str, tool: str | None = None):
        if tool is not None and tool not in TOOLS:
            raise ValueError(f"tool must be one of {', '.join(TOOLS)}, not {tool!r}")
        self.image = image
        self._tool = tool
        self._lock = threading.Lock()

    @property
    def tool(self) -> str:
        """The container tool in use (detected on first use).

        Raises:
            OSError: no tool is usable.
        """
        with self._lock:
            if self._tool is None:
                self._tool = detect_tool()
            return self._tool

    def launch(self, spec: LaunchSpec) -> ContainerJob:
        """Start ``spec``'s job in a new container of :attr:`image`.

        Raises:
            OSError: no tool, the image cannot be found or pulled, or the tool cannot start.
        """
        tool = self.tool
        name = f"byoc-{spec.job_name}-{uuid.uuid4().hex[:8]}"
        env = container_env(spec)
        tree = str(spec.tree)
        if tool == "buildah":
            pull = ["--pull-never"] if self.image.startswith("localhost/") else []  # else: pull if missing
            made = subprocess.run(
                ["buildah", "from", *pull, "--name", name, self.image],
                capture_output=True, text=True, stdin=subprocess.DEVNULL,
            )
            if made.returncode != 0:
                raise OSError(f"buildah from {self.image} failed: {made.stderr.strip() or made.stdout.strip()}")
            argv = ["buildah", "run", "--isolation", "chroot", "--network", "host", "-v", f"{tree}:{tree}"]
            for key, value in env.items():
                argv += ["--env", f"{key}={value}"]
            argv += [name, "--", "train"]
        else:
            argv = [tool, "run", "--rm", "--init", "--name", name, "--network", "host", "-v", f"{tree}:{tree}"]
            argv += ["--user", f"{os.getuid()}:{os.getgid()}"]  # files in the tree stay the developer's
            for key, value in env.items():
                argv += ["--env", f"{key}={value}"]
            argv += [self.image, "train"]
        try:
            popen = subprocess.Popen(
                argv, cwd=tree, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
        except OSError:
            if tool == "buildah":
                remove_buildah_container(name)
            raise
        return ContainerJob(popen, tool, name)
