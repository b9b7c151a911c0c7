"""Build and run the job image with buildah, for tests/test_container.py and bench/image.py.

No Docker engine is needed: buildah builds ``container/Dockerfile`` with ``--isolation chroot``
on a local Debian base image made by debootstrap, and runs commands in it with ``buildah run
--isolation chroot``. Both images are cached across runs, keyed by their inputs:

- the base image ``localhost/byoc-test-base:<key>`` (debootstrap minbase + python3, venv,
  ca-certificates from this machine's Debian mirror), and its rootfs tarball under
  :data:`CACHE_DIR` in case buildah's storage is wiped;
- the job image ``localhost/byoc-executor-test:<key>``, keyed by the Dockerfile, the files it
  copies and the build arguments. It is built to match THIS client's Python minor, covalent and
  cloudpickle (``byoc_entry.runtime_versions()``), as a user's build must match theirs;
- the GPU image ``localhost/byoc-executor-test-gpu:<key>`` (``Dockerfile.gpu``: PyTorch with its
  CUDA runtime, about 7.6 GB), built by ``build_and_push.sh --gpu --builder buildah --no-push``
  as a user builds it, keyed the same way. Only one is kept: building another removes the others
  (their shared layers stay, as the build cache of the next one).

Buildah's own storage (``/var/lib/containers``) holds the images; nothing goes into the repo.
:func:`remove_project_images` (``make distclean``) removes every image built on the tests' base.
Run as a script (``python3 tests/container_support.py remove-images``) it needs only the standard
library, so it works after ``make clean`` has removed the venv.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTAINER_DIR = REPO / "container"
CACHE_DIR = Path(os.environ.get("BYOC_CONTAINER_CACHE", "/var/tmp/byoc-container-cache"))
SUITE = "bookworm"  # Debian 12: python3 is 3.11, the client's minor
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_NAME = "localhost/byoc-test-base"
IMAGE_NAME = "localhost/byoc-executor-test"
GPU_IMAGE_NAME = "localhost/byoc-executor-test-gpu"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The files the Dockerfile copies (see container/.dockerignore).
IMAGE_INPUTS = ("Dockerfile", "byoc_entry.py", "train", "requirements.txt", ".dockerignore")


class ContainerSetupError(RuntimeError):
    """The machine cannot build or run the image; the message says what to install or fix."""


def run(argv: list[str], *, timeout: float = 900, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing its output; on failure raise with the command's stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
    if check and done.returncode != 0:
        raise ContainerSetupError(f"`{' '.join(argv[:4])} ...` failed ({done.returncode}):\n{done.stderr[-4000:] or done.stdout[-4000:]}")
    return done


# --- tools ------------------------------------------------------------------------------------------


def ensure_tools(tools: tuple[str, ...] = ("buildah", "debootstrap")) -> None:
    """Install buildah and debootstrap with apt-get when missing (root only, one `apt-get update`).

    Raises:
        ContainerSetupError: they are missing and cannot be installed here.
    """
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ContainerSetupError(
            f"{', '.join(missing)} not installed and this is not a root Debian/Ubuntu machine: install them "
            f"(apt-get install {' '.join(missing)}) or run without -m container"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update", "-q"], env=env, timeout=600)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=900)
    except ContainerSetupError as e:
        raise ContainerSetupError(f"could not install {', '.join(missing)} with apt-get: {e}") from e
    still = [t for t in missing if shutil.which(t) is None]
    if still:
        raise ContainerSetupError(f"apt-get ran but {', '.join(still)} is still not on PATH")


def debian_mirror() -> str:
    """The Debian archive URI this machine's apt uses (only the package registries are reachable)."""
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M) and not re.search(r"^Enabled:\s*no", stanza, re.M | re.I):
                for uri in re.findall(r"^URIs:\s*(.+)$", stanza, re.M):
                    candidates += uri.split()
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                m = re.match(rf"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s", line)
                if m:
                    candidates.append(m.group(1))
    for uri in candidates:
        if "security" not in uri and "/debian" in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def image_exists(name: str) -> bool:
    return run(["buildah", "inspect", "--type", "image", name], check=False, timeout=60).returncode == 0


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


# --- the base image -----------------------------------------------------------------------------------


def base_image_name(mirror: str | None = None) -> str:
    """The name :func:`base_image` gives the base for this machine's mirror (whether built or not)."""
    return f"{BASE_NAME}:{_key('base-v1', SUITE, mirror or debian_mirror(), *BASE_PACKAGES)}"


def base_image(mirror: str | None = None) -> str:
    """``localhost/byoc-test-base:<key>``: Debian minbase with Python, made by debootstrap; cached.

    Raises:
        ContainerSetupError: debootstrap or buildah failed.
    """
    mirror = mirror or debian_mirror()
    name = base_image_name(mirror)
    key = name.rsplit(":", 1)[1]
    if image_exists(name):
        return name
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"base-{key}.tar"
    if not tarball.is_file():
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as scratch:
            rootfs = Path(scratch) / "rootfs"
            run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), mirror],
                timeout=1800,
            )
            # What an image does not need: downloaded packages and package lists.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for p in (rootfs / leftover).glob("*"):
                    if p.is_file():
                        p.unlink()
            partial = tarball.with_suffix(".part")
            run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=600)
            partial.replace(tarball)
    # A rootfs becomes an image with buildah alone: a scratch container, the tarball added (buildah
    # unpacks local tar archives), committed.
    container = run(["buildah", "from", "scratch"]).stdout.strip()
    try:
        run(["buildah", "add", container, str(tarball), "/"], timeout=600)
        run(["buildah", "config", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", container])
        run(["buildah", "commit", "--rm", container, name], timeout=600)
    except ContainerSetupError:
        run(["buildah", "rm", container], check=False)
        raise
    return name


# --- the job image --------------------------------------------------------------------------------------


def pip_cert() -> str | None:
    """The CA bundle this machine's pip uses, if configured (a TLS-inspecting proxy needs it)."""
    for candidate in (os.environ.get("PIP_CERT"),):
        if candidate and Path(candidate).is_file():
            return candidate
    done = run([sys.executable, "-m", "pip", "config", "get", "global.cert"], check=False, timeout=60)
    candidate = done.stdout.strip()
    if done.returncode == 0 and candidate and Path(candidate).is_file():
        return candidate
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        candidate = os.environ.get(name, "")
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def pip_index_conf(directory: Path) -> Path | None:
    """A pip.conf with this machine's http(s) index settings from the environment, if any."""
    lines = []
    for var, key in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url")):
        urls = [u for u in os.environ.get(var, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            lines.append(f"{key} = {' '.join(urls)}")
    if not lines:
        return None
    path = directory / "pip.conf"
    path.write_text("[global]\n" + "\n".join(lines) + "\n")
    return path


def build_args(base: str, extras: str = "", **over: str) -> dict[str, str]:
    """Build arguments that make the image match this client."""
    import byoc_executor
    from byoc_executor.container import byoc_entry

    versions = byoc_entry.runtime_versions()
    args = {
        "BASE_IMAGE": base,
        "PYTHON_VERSION": versions["python"],
        "COVALENT_VERSION": versions["covalent"],
        "CLOUDPICKLE_VERSION": versions["cloudpickle"],
        "EXTRAS": extras,
        "BYOC_VERSION": byoc_executor.__version__,
    }
    args.update(over)
    return args


def build_image(base: str, *, dockerfile: str = "Dockerfile", tag: str | None = None, extras: str = "", **over: str) -> str:
    """Build ``container/<dockerfile>`` on ``base`` with buildah; cached by a key of its inputs.

    Returns:
        The image name.

    Raises:
        ContainerSetupError: the build failed (its output is in the message).
    """
    args = build_args(base, extras, **over)
    key = image_key(dockerfile, args)
    name = tag or f"{IMAGE_NAME}:{key}"
    if image_exists(name):
        return name
    with tempfile.TemporaryDirectory() as scratch:
        argv = ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers", "-f", str(CONTAINER_DIR / dockerfile), "-t", name]
        for k, v in args.items():
            argv += ["--build-arg", f"{k}={v}"]
        cert = pip_cert()
        if cert:
            argv += ["--secret", f"id=pip_cert,src={cert}"]
        conf = pip_index_conf(Path(scratch))
        if conf:
            argv += ["--secret", f"id=pip_conf,src={conf}"]
        run([*argv, str(CONTAINER_DIR)], timeout=1800)
    return name


def image_key(dockerfile: str, args: dict[str, str]) -> str:
    """The cache key of an image: its Dockerfile, the files it copies, its build arguments."""
    inputs = [(CONTAINER_DIR / f).read_bytes() for f in IMAGE_INPUTS if f != "Dockerfile"]
    return _key("image-v1", (CONTAINER_DIR / dockerfile).read_bytes(), *inputs, json.dumps(args, sort_keys=True))


def gpu_image(base: str, *, build: bool = True) -> str | None:
    """``localhost/byoc-executor-test-gpu:<key>``, built by ``build_and_push.sh --gpu`` if missing.

    The script reads the versions from this client (``PYTHON``) as it does for a user; the key
    covers the same inputs as :func:`build_image`. After a build, every other GPU image is removed.

    Args:
        base: The base image (``BASE_IMAGE``).
        build: Build the image if it is not there; when False, return None instead.

    Returns:
        The image name, or None if it is not built and ``build`` is False.

    Raises:
        ContainerSetupError: the build failed (its output is in the message).
    """
    args = build_args(base, "")
    del args["EXTRAS"]  # the script passes none: Dockerfile.gpu's default is what a user gets
    key = image_key("Dockerfile.gpu", args)
    name = f"{GPU_IMAGE_NAME}:{key}"
    if image_exists(name):
        return name
    if not build:
        return None
    env = {**os.environ, "PYTHON": sys.executable}
    cert = pip_cert()
    if cert:
        env["PIP_CERT"] = cert
    with tempfile.TemporaryDirectory() as scratch:
        conf = pip_index_conf(Path(scratch))
        if conf:
            env["PIP_CONFIG_FILE"] = str(conf)
        run(
            [str(CONTAINER_DIR / "build_and_push.sh"), "--gpu", "--builder", "buildah", "--no-push",
             "--repository-uri", GPU_IMAGE_NAME, "--region", "us-east-1", "--tag", key, "--build-arg", f"BASE_IMAGE={base}"],
            env=env, timeout=3600,
        )
    prune_gpu_images(keep=name)
    return name


def gpu_images_built() -> list[str]:
    """Names of the GPU images in buildah's storage (any key): their layers are the build cache."""
    return [n for image in _all_images() for n in image.get("names") or [] if n.startswith(f"{GPU_IMAGE_NAME}:")]


def _all_images() -> list[dict]:
    """Every image in buildah's storage, intermediate ones included: ``[{"id", "names"}]``."""
    return json.loads(run(["buildah", "images", "--all", "--json"], timeout=120).stdout or "[]")


def _inspect(image: str) -> dict:
    return json.loads(run(["buildah", "inspect", "--type", "image", image], timeout=120).stdout)


def _diff_ids(info: dict) -> list[str]:
    return list(info["OCIv1"].get("rootfs", {}).get("diff_ids") or [])


def prune_gpu_images(keep: str) -> list[str]:
    """Remove every image from a ``Dockerfile.gpu`` build (tagged or cache) that ``keep`` is not built on.

    The images ``keep`` was built from (its build cache: their layers are a prefix of its own) stay,
    so that the next build after a change to a late input reuses its PyTorch layer.

    Returns:
        The IDs removed.
    """
    kept = _diff_ids(_inspect(keep))
    removed = []
    for image in _all_images():
        info = _inspect(image["id"])
        labels = (info["OCIv1"].get("config") or {}).get("Labels") or {}
        layers = _diff_ids(info)
        # Only Dockerfile.gpu sets this label; keep's own ID passes the prefix test too.
        if "io.byoc-executor.torch" not in labels or kept[: len(layers)] == layers:
            continue
        run(["buildah", "rmi", "-f", image["id"]], check=False, timeout=300)
        removed.append(image["id"])
    return removed


def remove_project_images() -> list[str]:
    """Remove the tests' base images and every image built on one (the job images, their caches).

    An image is the tests' if its first layer is the first layer of a ``localhost/byoc-test-base``
    image: the base is a debootstrap rootfs made here, so nothing else starts with that layer.

    Returns:
        The IDs removed.
    """
    images = _all_images()
    layers = {image["id"]: _diff_ids(_inspect(image["id"])) for image in images}
    names = {image["id"]: image.get("names") or [] for image in images}
    base_layers = {layers[i][0] for i, n in names.items() if layers.get(i) and any(x.startswith(f"{BASE_NAME}:") for x in n)}
    ours = [(len(ids), image_id) for image_id, ids in layers.items() if ids and ids[0] in base_layers]
    removed = []
    for _, image_id in sorted(ours, reverse=True):  # children before the images they are built on
        if run(["buildah", "rmi", "-f", image_id], check=False, timeout=300).returncode == 0:
            removed.append(image_id)
    return removed


def image_size(name: str) -> int:
    """The image's size in bytes: the sum of its layers, uncompressed (as stored locally)."""
    manifest = json.loads(json.loads(run(["buildah", "inspect", "--type", "image", name]).stdout)["Manifest"])
    return sum(int(layer["size"]) for layer in manifest["layers"])


def compressed_size(name: str) -> int:
    """The image's size in bytes as a registry stores it (gzip-compressed layers, as pushed)."""
    with tempfile.TemporaryDirectory() as scratch:
        run(["buildah", "push", "--format", "oci", name, f"oci:{scratch}/image"], timeout=1800)
        blobs = Path(scratch) / "image" / "blobs"
        return sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file())


# --- running the image --------------------------------------------------------------------------------------


@dataclass
class Container:
    """A buildah working container of an image; remove it with :meth:`remove`."""

    name: str

    @classmethod
    def of(cls, image: str) -> "Container":
        name = f"byoc-test-{uuid.uuid4().hex[:10]}"
        run(["buildah", "from", "--pull-never", "--name", name, image], timeout=300)
        return cls(name)

    def run(
        self, command: list[str], *, env: dict[str, str] | None = None, mounts: tuple[Path | tuple[Path, Path], ...] = (), timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """``buildah run --isolation chroot --network host``; a mount is a path (at the same path
        inside) or a (host path, container path) pair."""
        argv = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
        for m in mounts:
            host, inside = m if isinstance(m, tuple) else (m, m)
            argv += ["-v", f"{host}:{inside}"]
        for k, v in (env or {}).items():
            argv += ["--env", f"{k}={v}"]
        return run([*argv, self.name, "--", *command], check=False, timeout=timeout)

    def remove(self) -> None:
        run(["buildah", "rm", self.name], check=False, timeout=120)


def run_in_image(image: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` in a fresh working container of ``image``, then remove the container."""
    container = Container.of(image)
    try:
        return container.run(command, **kwargs)
    finally:
        container.remove()


def source_archive_bytes() -> bytes:
    """The Braket source archive, exactly as the client uploads it."""
    from byoc_executor.byoc import _source_archive

    return _source_archive()


if __name__ == "__main__":
    # `make distclean`: python3 tests/container_support.py remove-images (standard library only).
    if sys.argv[1:] != ["remove-images"]:
        sys.exit("usage: python3 tests/container_support.py remove-images")
    if shutil.which("buildah") is None:
        sys.exit(0)  # no buildah, no images
    print(f"removed {len(remove_project_images())} buildah images built by the tests")
