#!/usr/bin/env bash
# Build the byoc-executor job image, tag it with the versions it contains, push it to ECR, and
# print the image URI to put in [executors.byoc] image_uri (or BYOCExecutor(image_uri=...)).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: container/build_and_push.sh --repository-uri <uri> --region <region> [options]

Builds container/Dockerfile (or Dockerfile.gpu with --gpu), tags it
  <repository-uri>:<byoc version>-py<python>-cov<covalent>-cp<cloudpickle>[-gpu]
(and <repository-uri>:<tag> with --tag), logs in to ECR, pushes, and prints the image URI.

The image must match the client that submits tasks: same Python minor, covalent and cloudpickle.
The versions are read from the client's Python ($PYTHON, else python3; e.g. PYTHON=.venv/bin/python):
  python -c "from byoc_executor.container import byoc_entry; print(byoc_entry.runtime_versions())"
A version given with an option below wins. Where byoc_executor cannot be imported, all three
options are needed: the script never guesses them (an image with other versions than the
client's refuses every task).

Options:
  --repository-uri URI   ECR repository, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor
  --region REGION        AWS region of the repository (for the ECR login)
  --gpu                  build the GPU image (Dockerfile.gpu: PyTorch with its CUDA runtime)
  --tag TAG              an extra tag, e.g. latest or dev
  --builder TOOL         docker, podman or buildah (default: the first one found that works)
  --no-push              build and tag only; no ECR login, no push
  --dry-run              print the build command and the image URI; build and push nothing
  --python-version V     override the client's Python minor (e.g. 3.11)
  --covalent-version V   override the client's covalent version
  --cloudpickle-version V  override the client's cloudpickle version
  --build-arg KEY=VALUE  passed to the build, e.g. EXTRAS="amazon-braket-sdk pennylane",
                         BASE_IMAGE=..., TORCH_REQUIREMENT=torch==2.7.1 (repeatable)
  -h, --help             this help

Environment: PIP_CERT (a CA bundle for pip inside the build) and PIP_CONFIG_FILE (a pip.conf, e.g.
naming a private index) are passed as build secrets, never stored in the image. Needs the aws CLI (v2) for the ECR login unless --no-push.
EOF
}

die() {
    echo "build_and_push.sh: $*" >&2
    echo "Run with --help for usage." >&2
    exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repository_uri="" region="" gpu=0 extra_tag="" builder="" push=1 dry_run=0
python_version="" covalent_version="" cloudpickle_version=""
build_args=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --repository-uri) [[ $# -ge 2 ]] || die "$1 needs a value"; repository_uri="$2"; shift 2 ;;
        --region) [[ $# -ge 2 ]] || die "$1 needs a value"; region="$2"; shift 2 ;;
        --gpu) gpu=1; shift ;;
        --tag) [[ $# -ge 2 ]] || die "$1 needs a value"; extra_tag="$2"; shift 2 ;;
        --builder) [[ $# -ge 2 ]] || die "$1 needs a value"; builder="$2"; shift 2 ;;
        --no-push) push=0; shift ;;
        --dry-run) dry_run=1; shift ;;
        --python-version) [[ $# -ge 2 ]] || die "$1 needs a value"; python_version="$2"; shift 2 ;;
        --covalent-version) [[ $# -ge 2 ]] || die "$1 needs a value"; covalent_version="$2"; shift 2 ;;
        --cloudpickle-version) [[ $# -ge 2 ]] || die "$1 needs a value"; cloudpickle_version="$2"; shift 2 ;;
        --build-arg) [[ $# -ge 2 && "$2" == *=* ]] || die "$1 needs KEY=VALUE"; build_args+=("$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

[[ -n "$repository_uri" ]] || die "--repository-uri is required (e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-executor)"
[[ -n "$region" ]] || die "--region is required (the repository's AWS region)"
[[ "$repository_uri" != *:* ]] || die "--repository-uri must not include a tag (use --tag): $repository_uri"

# --- the versions the image must match ------------------------------------------------------------
python_bin="${PYTHON:-python3}"
client_versions=""
if command -v "$python_bin" >/dev/null 2>&1; then
    client_versions="$("$python_bin" -c 'from byoc_executor.container import byoc_entry as e; v = e.runtime_versions(); print(v["python"], v["covalent"], v["cloudpickle"])' 2>/dev/null || true)"
fi
if [[ -n "$client_versions" ]]; then
    read -r client_python client_covalent client_cloudpickle <<<"$client_versions"
    if [[ "$client_covalent" == absent || "$client_cloudpickle" == absent ]]; then
        client_versions=""
    fi
fi
if [[ -n "$client_versions" ]]; then
    python_version="${python_version:-$client_python}"
    covalent_version="${covalent_version:-$client_covalent}"
    cloudpickle_version="${cloudpickle_version:-$client_cloudpickle}"
elif [[ -z "$python_version" || -z "$covalent_version" || -z "$cloudpickle_version" ]]; then
    die "cannot read the client's versions: byoc_executor (with covalent and cloudpickle) is not importable with $python_bin.
Run with the client's Python, e.g. PYTHON=/path/to/venv/bin/python $0 ... (terraform: -var client_python=...),
or pass all of --python-version, --covalent-version and --cloudpickle-version (the client's venv prints them:
  python -c 'from byoc_executor.container import byoc_entry; print(byoc_entry.runtime_versions())')"
fi
byoc_version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$here/../pyproject.toml" | head -n 1)"
byoc_version="${byoc_version:-0.0.0}"

suffix=""
dockerfile="$here/Dockerfile"
if [[ "$gpu" == 1 ]]; then
    suffix="-gpu"
    dockerfile="$here/Dockerfile.gpu"
fi
version_tag="${byoc_version}-py${python_version}-cov${covalent_version}-cp${cloudpickle_version}${suffix}"
image="${repository_uri}:${version_tag}"

# --- the builder ------------------------------------------------------------------------------------
if [[ -z "$builder" ]]; then
    for candidate in docker podman; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
            builder="$candidate"
            break
        fi
    done
    if [[ -z "$builder" ]] && command -v buildah >/dev/null 2>&1; then
        builder=buildah
    fi
    if [[ -z "$builder" && "$dry_run" == 1 ]]; then
        builder=docker  # what the printed command would most likely run with
    fi
    [[ -n "$builder" ]] || die "no working docker, podman or buildah found: install one, or pass --builder"
fi
case "$builder" in
    docker|podman|buildah) ;;
    *) die "--builder must be docker, podman or buildah, not $builder" ;;
esac
[[ "$dry_run" == 1 ]] || command -v "$builder" >/dev/null 2>&1 || die "$builder is not installed"

build=("$builder")
case "$builder" in
    docker) build+=(build) ;;
    podman) build+=(build --network host) ;;
    buildah) build+=(bud --isolation chroot --network host --layers) ;;
esac
build+=(-f "$dockerfile" -t "$image")
build+=(--build-arg "PYTHON_VERSION=${python_version}")
build+=(--build-arg "COVALENT_VERSION=${covalent_version}")
build+=(--build-arg "CLOUDPICKLE_VERSION=${cloudpickle_version}")
build+=(--build-arg "BYOC_VERSION=${byoc_version}")
for arg in "${build_args[@]+"${build_args[@]}"}"; do
    build+=(--build-arg "$arg")
done
if [[ -n "${PIP_CERT:-}" && -f "${PIP_CERT}" ]]; then
    build+=(--secret "id=pip_cert,src=${PIP_CERT}")
fi
if [[ -n "${PIP_CONFIG_FILE:-}" && -f "${PIP_CONFIG_FILE}" ]]; then
    build+=(--secret "id=pip_conf,src=${PIP_CONFIG_FILE}")
fi
if [[ -n "$extra_tag" ]]; then
    build+=(-t "${repository_uri}:${extra_tag}")
fi

if [[ "$dry_run" == 1 ]]; then
    printf '%q ' "${build[@]}" "$here"
    printf '\n'
    echo "image_uri = \"$image\""
    exit 0
fi

echo "building $image (Python $python_version, covalent $covalent_version, cloudpickle $cloudpickle_version) with $builder" >&2
if [[ "$builder" == docker ]]; then
    DOCKER_BUILDKIT=1 "${build[@]}" "$here"
else
    "${build[@]}" "$here"
fi

if [[ "$push" == 1 ]]; then
    command -v aws >/dev/null 2>&1 || die "the aws CLI is needed to log in to ECR (or use --no-push)"
    registry="${repository_uri%%/*}"
    echo "logging in to $registry" >&2
    aws ecr get-login-password --region "$region" | "$builder" login --username AWS --password-stdin "$registry"
    "$builder" push "$image"
    if [[ -n "$extra_tag" ]]; then
        "$builder" push "${repository_uri}:${extra_tag}"
    fi
    echo "pushed $image" >&2
else
    echo "built $image (not pushed: --no-push)" >&2
fi

echo "image_uri = \"$image\""
