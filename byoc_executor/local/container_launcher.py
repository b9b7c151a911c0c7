"""Run emulated jobs inside the built job image, with docker, podman or buildah.

:class:`ContainerLauncher` implements the :class:`~byoc_executor.local.launchers.Launcher`
seam: where :class:`~byoc_executor.local.launchers.ProcessLauncher` runs the entry script as a
local process, this runs the image's own ``train`` command (what SageMaker and Braket start), so a
local job exercises the very image that will run in AWS.

The container gets the services' real layout (:func:`real_layout`): the job's ``opt/ml/input``,
``model`` and ``output`` (and its checkpoint directory) are mounted at ``/opt/ml/...`` where the
services put them, so the image's own ``/opt/ml/code`` stays visible; ``AMZN_BRAKET_*`` name
``/opt/braket/...``, which does not exist until the image links it (``braket_contract.py``);
``SAGEMAKER_BASE_DIR``, ``HOME`` and ``TMPDIR`` are the image's own. The container shares the
host's network (``--network host``): the job reaches the emulator's S3 and Logs at
``AWS_ENDPOINT_URL`` on loopback.

Which image: the job's own (``TrainingImage`` / ``containerImage.uri``) when the tool has it
locally, started as SageMaker starts an image (its ENTRYPOINT, if any, with ``train``); else the
launcher's ``image`` (the ``--image`` of ``byoc-executor local``: the byoc-executor image), which
runs byoc-executor's jobs only: others are refused at creation (:meth:`ContainerLauncher.refusal`).

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

import json
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


# The emulator's own stand-ins for a container's filesystem: inside, the image's own are used.
_EMULATOR_ONLY_ENV = frozenset({"SAGEMAKER_BASE_DIR", "HOME", "TMPDIR"})
_ML_PARTS = ("input", "model", "output", "checkpoints")


def real_layout(spec: LaunchSpec) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(mounts as (host, container) pairs, environment) of a job under the services' layout.

    Paths in the environment that point into the job's tree (``<tree>/opt/...``) are rewritten to
    the same path under ``/``; every such directory other than ``/opt/ml`` and ``/opt/braket``
    (e.g. Braket's ``checkpointConfig.localPath``) is mounted where the variable says.
    """
    tree = spec.tree
    ml = tree / "opt" / "ml"
    mounts = []
    for part in _ML_PARTS:
        (ml / part).mkdir(parents=True, exist_ok=True)
        mounts.append((str(ml / part), f"/opt/ml/{part}"))
    env = {}
    prefix = str(tree) + "/"
    for key, value in container_env(spec).items():
        if key in _EMULATOR_ONLY_ENV:
            continue
        if value.startswith(prefix):
            inside = "/" + value[len(prefix):]
            host = value
            if not (inside == "/opt/ml" or inside.startswith(("/opt/ml/", "/opt/braket"))) and not any(inside == m[1] for m in mounts):
                os.makedirs(host, exist_ok=True)
                mounts.append((host, inside))
            value = inside
        env[key] = value
    return mounts, env


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
        self._local: dict[str, list[str] | None] = {}  # image -> its ENTRYPOINT ([] none), None: not local

    def local_entrypoint(self, image: str) -> list[str] | None:
        """The ENTRYPOINT of ``image`` if the tool has it locally ([] for none), else None. Cached."""
        with self._lock:
            if image in self._local:
                return self._local[image]
        tool = self.tool
        argv = ["buildah", "inspect", "--type", "image", image] if tool == "buildah" else [tool, "image", "inspect", image]
        try:
            answer = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=_INFO_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            answer = None
        entrypoint: list[str] | None = None
        if answer is not None and answer.returncode == 0:
            try:
                info = json.loads(answer.stdout)
                config = (info.get("OCIv1") or {}).get("config") or {} if tool == "buildah" else (info[0].get("Config") or {})
                entrypoint = list(config.get("Entrypoint") or [])
            except (ValueError, IndexError, AttributeError):
                entrypoint = []
        with self._lock:
            self._local[image] = entrypoint
        return entrypoint

    def refusal(self, service: str, request: dict) -> str | None:
        """Why this launcher cannot run the job (None: it can): the job's own image is here, or it
        is a byoc-executor job, which ``image`` runs."""
        own = _job_image(service, request)
        if own and own != self.image and self.local_entrypoint(own) is not None:
            return None
        from byoc_executor.local.byoc_image import ByocImageLauncher  # what --image is: the byoc image

        why = ByocImageLauncher().refusal(service, request)
        if why is None:
            return None
        return f"its image {own} is not in the container tool's local images, and {self.image} runs byoc-executor jobs only"

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
        mounts, env = real_layout(spec)
        tree = str(spec.tree)
        image, command = self.image, ["train"]
        own = self.local_entrypoint(spec.image) if spec.image and spec.image != self.image else None
        if own is not None:
            # SageMaker starts the image as `docker run IMAGE train`: its ENTRYPOINT gets "train".
            image, command = spec.image, [*own, "train"]  # type: ignore[assignment]
        volumes = [arg for host, inside in mounts for arg in ("-v", f"{host}:{inside}")]
        if tool == "buildah":
            pull = ["--pull-never"] if image.startswith("localhost/") or own is not None else []  # else: pull if missing
            made = subprocess.run(
                ["buildah", "from", *pull, "--name", name, image],
                capture_output=True, text=True, stdin=subprocess.DEVNULL,
            )
            if made.returncode != 0:
                raise OSError(f"buildah from {image} failed: {made.stderr.strip() or made.stdout.strip()}")
            argv = ["buildah", "run", "--isolation", "chroot", "--network", "host", *volumes]
            for key, value in env.items():
                argv += ["--env", f"{key}={value}"]
            argv += [name, "--", *command]
        else:
            argv = [tool, "run", "--rm", "--init", "--name", name, "--network", "host", *volumes]
            argv += ["--user", f"{os.getuid()}:{os.getgid()}"]  # files in the tree stay the developer's
            for key, value in env.items():
                argv += ["--env", f"{key}={value}"]
            argv += [image, "train"]  # the engine applies the image's ENTRYPOINT itself
        try:
            popen = subprocess.Popen(
                argv, cwd=tree, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
        except OSError:
            if tool == "buildah":
                remove_buildah_container(name)
            raise
        return ContainerJob(popen, tool, name)


def _job_image(service: str, request: dict) -> str | None:
    """The image a job names: ``TrainingImage`` or ``containerImage.uri``."""
    if service == "sagemaker":
        return (request.get("AlgorithmSpecification") or {}).get("TrainingImage")
    return ((request.get("algorithmSpecification") or {}).get("containerImage") or {}).get("uri")
