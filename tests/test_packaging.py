"""What a newcomer installs: the sdist and the wheel, the CLI without extras, the image's versions.

- The sdist and the wheel are built as pip builds them (``python -m build``: the sdist, then the
  wheel from the unpacked sdist). The sdist must hold every file git tracks, and a part of the suite
  must pass from it: ``make venv-test`` in the unpacked sdist, then pytest there. (The new venv
  borrows this venv's dependencies through a ``.pth`` file, so nothing is downloaded but the build
  backend: the test is about what the sdist contains, not about PyPI.)
- ``byoc-executor local`` without the ``local`` extra says how to install it, in one line.
- ``build_and_push.sh`` never guesses the versions the image must match: it reads them from the
  client or takes all three explicitly (``--dry-run`` prints the build command it would run), and
  the Dockerfiles have no version defaults to fall back on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import byoc_executor
from byoc_executor.container import byoc_entry

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "container" / "build_and_push.sh"
REPOSITORY = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor"

# The part of the suite run from the unpacked sdist: pure logic, the entry script's contract (the
# module the wheel maps from container/), and the terraform checks (terraform/ must be there).
SDIST_TESTS = ["tests/test_requests.py", "tests/test_settings.py", "tests/test_runner.py", "tests/test_terraform.py"]


@dataclass
class Dists:
    sdist: Path
    wheel: Path


def source_files() -> list[str]:
    """The files of a clean checkout of this tree: tracked, or new and not ignored."""
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout (an unpacked sdist?): {done.stderr.strip()}")
    return [f for f in done.stdout.splitlines() if (ROOT / f).is_file()]  # a deleted file is still "cached"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """The sdist and the wheel of a clean copy of the tree, built by ``python -m build`` as pip would.

    A copy, because setuptools adds every file named in an existing ``*.egg-info/SOURCES.txt`` (the
    editable install leaves one here) to the sdist: a file missing from MANIFEST.in would go unseen.
    """
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("byoc_executor-*.tar.gz")
    (wheel,) = out.glob("byoc_executor-*.whl")
    return Dists(sdist, wheel)


def sdist_members(sdist: Path) -> set[str]:
    """Paths in the sdist relative to its top directory."""
    with tarfile.open(sdist) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    return {name.split("/", 1)[1] for name in names if "/" in name}


@pytest.mark.packaging
def test_sdist_holds_every_tracked_file(dists: Dists) -> None:
    members = sdist_members(dists.sdist)
    # git's own ignore file is the one tracked file a user of the sdist has no use for.
    missing = sorted(set(source_files()) - members - {".gitignore"})
    assert missing == [], f"in the checkout but not in the sdist (MANIFEST.in): {missing}"
    for needed in ("LICENSE", "Makefile", "tests/conftest.py", "tests/__init__.py", "tests/container_support.py",
                   "container/Dockerfile", "container/Dockerfile.gpu", "container/build_and_push.sh", "container/.dockerignore",
                   "terraform/main.tf", "examples/quickstart.py", "bench/image.py"):
        assert needed in members, needed
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc") or ".tfstate" in m]


@pytest.mark.packaging
def test_wheel_has_the_license_and_only_the_package(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(info).decode()
        license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        license_text = whl.read(license_file).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert not any(line.startswith("License: ") for line in metadata.splitlines())  # the deprecated table form
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "byoc_executor/container/byoc_entry.py" in names
    # The image is built from a checkout (or an unpacked sdist), never from site-packages.
    assert not [n for n in names if re.search(r"Dockerfile|build_and_push|requirements\.txt|/train$", n)]
    assert not [n for n in names if n.startswith(("tests/", "examples/", "bench/", "terraform/"))]


@pytest.mark.packaging
def test_suite_runs_from_the_unpacked_sdist(dists: Dists, tmp_path: Path) -> None:
    with tarfile.open(dists.sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (unpacked,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    venv_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True, timeout=300)
    python = venv_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "byoc_test_borrowed_deps.pth").write_text("\n".join(sorted(borrowed)) + "\n")

    # What the README tells a newcomer to run, in the unpacked sdist (its venv exists: pip finds
    # every dependency satisfied and installs the package itself, editable, from the sdist's files).
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    setup = subprocess.run(["make", "venv-test", f"VENV={venv_dir}"], cwd=unpacked, capture_output=True, text=True, env=env, timeout=900)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    where = subprocess.run(
        [str(python), "-c", "import byoc_executor, byoc_executor.container.byoc_entry as e; print(byoc_executor.__file__); print(e.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(unpacked) for line in where.stdout.split()), where.stdout

    # checkov needs its own venv and a download: the parsing checks are what concern the sdist.
    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not checkov", *SDIST_TESTS],
        cwd=unpacked, capture_output=True, text=True, env=env, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary, summary


# --- the CLI without the local extra ---------------------------------------------------------------------


def test_local_without_the_extra_says_how_to_install_it() -> None:
    # moto stands for the whole extra: with it unimportable, the emulator cannot be imported.
    code = "import sys; sys.modules['moto'] = None; from byoc_executor.cli import main; sys.exit(main(['local']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert 'pip install "byoc-executor[local]"' in done.stderr and "moto" in done.stderr


# --- the versions the image must match ---------------------------------------------------------------------


def build_script(*args: str, python: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python}
    return subprocess.run([str(SCRIPT), "--repository-uri", REPOSITORY, "--region", "us-east-1", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def build_args_of(dry_run: subprocess.CompletedProcess) -> dict[str, str]:
    command = dry_run.stdout.splitlines()[0].split()
    return dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--build-arg")


@pytest.fixture
def python_without_the_client(tmp_path: Path) -> str:
    """A Python that cannot import byoc_executor: a fresh venv, as on a machine outside the client's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    return str(tmp_path / "bare" / "bin" / "python")


def test_build_script_outside_the_client_fails_with_the_fix(python_without_the_client: str) -> None:
    done = build_script("--no-push", "--builder", "buildah", python=python_without_the_client)
    assert done.returncode == 2, done.stderr
    assert "cannot read the client's versions" in done.stderr
    assert "PYTHON=" in done.stderr and "--cloudpickle-version" in done.stderr and "client_python" in done.stderr
    assert "building" not in done.stderr  # nothing was built
    # Two of three versions are not enough either.
    partial = build_script("--dry-run", "--python-version", "3.11", "--covalent-version", "0.240.0", python=python_without_the_client)
    assert partial.returncode == 2 and "cannot read the client's versions" in partial.stderr


def test_build_script_takes_all_three_versions_explicitly(python_without_the_client: str) -> None:
    done = build_script("--dry-run", "--gpu", "--python-version", "3.12", "--covalent-version", "0.240.0",
                        "--cloudpickle-version", "9.9.9", python=python_without_the_client)
    assert done.returncode == 0, done.stderr
    args = build_args_of(done)
    assert (args["PYTHON_VERSION"], args["COVALENT_VERSION"], args["CLOUDPICKLE_VERSION"]) == ("3.12", "0.240.0", "9.9.9")
    assert "Dockerfile.gpu" in done.stdout.splitlines()[0]
    assert done.stdout.splitlines()[-1] == f'image_uri = "{REPOSITORY}:{byoc_executor.__version__}-py3.12-cov0.240.0-cp9.9.9-gpu"'


def test_build_script_reads_the_clients_versions() -> None:
    versions = byoc_entry.runtime_versions()
    done = build_script("--dry-run", python=sys.executable)
    assert done.returncode == 0, done.stderr
    args = build_args_of(done)
    assert args["PYTHON_VERSION"] == versions["python"]
    assert args["COVALENT_VERSION"] == versions["covalent"]
    assert args["CLOUDPICKLE_VERSION"] == versions["cloudpickle"]
    assert args["BYOC_VERSION"] == byoc_executor.__version__
    # An option still wins over the client's version.
    over = build_script("--dry-run", "--cloudpickle-version", "9.9.9", python=sys.executable)
    assert build_args_of(over)["CLOUDPICKLE_VERSION"] == "9.9.9"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_have_no_version_defaults_to_fall_back_on(dockerfile: str) -> None:
    text = (ROOT / "container" / dockerfile).read_text()
    for name in ("PYTHON_VERSION", "COVALENT_VERSION", "CLOUDPICKLE_VERSION"):
        declared = re.findall(rf"^ARG {name}(?:=(.*))?$", text, re.M)
        assert declared, f"{dockerfile} does not declare {name}"
        assert all(default in ("", '""') for default in declared), f"{dockerfile}: {name} has a default: {declared}"
        assert f'-z "${{{name}}}"' in text, f"{dockerfile} must refuse a build without {name}"


def test_terraform_build_passes_the_client_python() -> None:
    hcl2 = pytest.importorskip("hcl2")
    with (ROOT / "terraform" / "ecr.tf").open() as f:
        parsed = hcl2.load(f, serialization_options=hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False))
    builds = [body for block in parsed["resource"] for kind, named in block.items() if kind == "terraform_data" for body in named.values()]
    assert len(builds) == 2
    for body in builds:
        local_exec = body["provisioner"][0]["local-exec"]
        assert local_exec["environment"] == {"PYTHON": "${var.client_python}"}


def test_make_distclean_names_what_the_project_made(tmp_path: Path) -> None:
    cache = tmp_path / "container-cache"
    dry = subprocess.run(["make", "-n", "distclean", f"BYOC_CONTAINER_CACHE={cache}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    made_by_tests = (".venv-tools", ".venv-sagemaker-v2")  # checkov's venv; the SageMaker SDK v2's (tests/test_outside_sagemaker.py)
    assert 'REPO / ".venv-sagemaker-v2"' in (ROOT / "tests" / "test_outside_sagemaker.py").read_text()  # still its name
    for made in (".venv", *made_by_tests, ".byoc-local", "byoc_executor.egg-info", str(cache), "container_support.py remove-images"):
        assert made in dry.stdout, made
    # buildah: only images on the tests' own base (tests/container_support.py), never a prune of all.
    assert "buildah" not in dry.stdout
    # The image removal runs with the system's Python after `make clean` took the venv: no imports
    # of the package or of anything outside the standard library.
    done = subprocess.run([sys.base_prefix + "/bin/python3", "-I", "-c",
                           "import runpy, sys; sys.argv = ['x', '--help']; runpy.run_path('tests/container_support.py', run_name='__main__')"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "usage: python3 tests/container_support.py remove-images" in done.stderr, done.stderr
