"""terraform/: least-privilege IAM, a hardened bucket, and a covalent_config the executor accepts.

No terraform binary is needed: the .tf files are parsed with python-hcl2 and checked as data, the
covalent_config template is rendered here the way ``templatefile()`` renders it (it holds only
``${name}`` interpolations), and checkov runs from its own virtualenv under ``.venv-tools/``
(its dependencies conflict with Covalent's pins, so it cannot share this one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import venv
from pathlib import Path
from typing import Any, Iterator

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 parses the terraform files (pip install python-hcl2)")

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
TEMPLATE = TERRAFORM / "covalent_config.tftpl"

CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = ROOT / ".venv-tools" / "checkov"

# Actions IAM authorizes only against "*" (no resource-level permissions), per the Service
# Authorization Reference. Any other action must name its resources.
STAR_ONLY_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "braket:CreateJob",
    "braket:SearchJobs",
    "braket:CreateQuantumTask",
    "braket:SearchQuantumTasks",
    "braket:GetDevice",
    "braket:SearchDevices",
    "sagemaker:ListTrainingJobs",
}

ROLE_SERVICES = {"braket_jobs": "braket.amazonaws.com", "sagemaker_jobs": "sagemaker.amazonaws.com"}

# Values a real apply would produce, for rendering the template.
ACCOUNT = "123456789012"


# -- reading the configuration ---------------------------------------------------------------------


def _load() -> dict[str, Any]:
    """Every top-level block of terraform/*.tf, merged: {"resource": {type: {name: body}}, ...}."""
    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    merged: dict[str, Any] = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}, "terraform": []}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as f:
            parsed = hcl2.load(f, serialization_options=options)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for type_, named in block.items():
                    for name, body in named.items():
                        assert name not in merged[kind].setdefault(type_, {}), f"{kind} {type_}.{name} defined twice"
                        merged[kind][type_][name] = body
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
        for block in parsed.get("locals", []):
            merged["locals"].update({k: v for k, v in block.items() if not k.startswith("__")})
        merged["terraform"] += parsed.get("terraform", [])
    return merged


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    return _load()


def _policy_documents(tf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return tf["data"]["aws_iam_policy_document"]


def _statements(tf: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, doc in _policy_documents(tf).items():
        assert "dynamic" not in doc, f"policy document {name}: write statements out (tests read them statically)"
        for statement in doc.get("statement", []):
            yield f"{name}/{statement.get('sid', '?')}", statement


def _doc_of(expression: str) -> str:
    """The policy document an attribute like ``${data.aws_iam_policy_document.x[0].json}`` names."""
    match = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)(\[0\])?\.json\}", expression)
    assert match, f"{expression!r} is not a data.aws_iam_policy_document reference"
    return match.group(1)


def _merged_statements(tf: dict[str, Any], doc_name: str) -> list[dict[str, Any]]:
    """The statements of a document, following its source_policy_documents."""
    doc = _policy_documents(tf)[doc_name]
    statements = list(doc.get("statement", []))
    sources = doc.get("source_policy_documents", "")
    for source in re.findall(r"data\.aws_iam_policy_document\.(\w+)", sources):
        statements += _merged_statements(tf, source)
    return statements


def _conditions(statement: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    return {(c["test"], c["variable"]): c["values"] for c in statement.get("condition", [])}


# -- IAM ---------------------------------------------------------------------------------------------


def test_every_statement_names_its_actions(tf: dict[str, Any]) -> None:
    seen = 0
    for where, statement in _statements(tf):
        seen += 1
        assert "not_actions" not in statement and "not_resources" not in statement, where
        assert statement.get("effect") in ("Allow", "Deny"), f"{where}: say the effect explicitly"
        actions = statement.get("actions") or []
        assert actions, f"{where} has no actions"
        for action in actions:
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", action), f"{where}: {action!r}"
            assert action != "*", f"{where}: bare '*' action"
            if statement["effect"] == "Allow":
                assert "*" not in action, f"{where}: Allow with a wildcard action {action!r}"
            else:
                # A service-wide wildcard widens a Deny (the TLS-only rule), which is the safe direction.
                assert action.endswith(":*") or "*" not in action, f"{where}: {action!r}"
    assert seen >= 20


def test_star_resources_only_where_iam_accepts_nothing_else(tf: dict[str, Any]) -> None:
    for where, statement in _statements(tf):
        if statement["effect"] != "Allow" or "*" not in statement.get("resources", []):
            continue
        assert statement["resources"] == ["*"], f"{where}: '*' mixed with other resources"
        extra = set(statement["actions"]) - STAR_ONLY_ACTIONS
        assert not extra, f"{where}: {sorted(extra)} support resource-level permissions; name the resources"


def test_no_managed_or_inline_json_policies(tf: dict[str, Any]) -> None:
    resources = tf["resource"]
    assert "aws_iam_role_policy_attachment" not in resources
    assert "aws_iam_policy_attachment" not in resources
    for name, role in resources["aws_iam_role"].items():
        assert "managed_policy_arns" not in role and "inline_policy" not in role, name
        _doc_of(role["assume_role_policy"])
    for type_, attribute in [("aws_iam_role_policy", "policy"), ("aws_iam_policy", "policy"), ("aws_s3_bucket_policy", "policy")]:
        for name, body in resources[type_].items():
            _doc_of(body[attribute])  # every policy is a policy document these tests read


def test_each_role_is_trusted_by_its_own_service_only(tf: dict[str, Any]) -> None:
    roles = tf["resource"]["aws_iam_role"]
    assert set(roles) == set(ROLE_SERVICES)
    for role_name, service in ROLE_SERVICES.items():
        trust = _policy_documents(tf)[_doc_of(roles[role_name]["assume_role_policy"])]
        (statement,) = trust["statement"]
        assert statement["effect"] == "Allow"
        assert statement["actions"] == ["sts:AssumeRole"]
        (principal,) = statement["principals"]
        assert principal == {"type": "Service", "identifiers": [service]}
        conditions = _conditions(statement)
        assert conditions[("StringEquals", "aws:SourceAccount")] == ["${local.account}"]
        prefix = service.split(".")[0]
        source_arns = [v for (test, key), v in conditions.items() if key == "aws:SourceArn"]
        assert len(source_arns) == 1 and all(a.startswith(f"arn:${{local.partition}}:{prefix}:${{var.region}}:${{local.account}}:") for a in source_arns[0])


def test_pass_role_names_exactly_the_two_roles_for_their_own_service(tf: dict[str, Any]) -> None:
    passed: dict[str, str] = {}
    for where, statement in _statements(tf):
        if "iam:PassRole" not in statement["actions"]:
            continue
        assert statement["actions"] == ["iam:PassRole"], f"{where}: PassRole shares a statement"
        (resource,) = statement["resources"]
        match = re.fullmatch(r"\$\{aws_iam_role\.(\w+)\[0\]\.arn\}", resource)
        assert match, f"{where}: PassRole on {resource!r}"
        role = match.group(1)
        assert _conditions(statement) == {("StringEquals", "iam:PassedToService"): [ROLE_SERVICES[role]]}, where
        assert role not in passed, f"{where}: {role} passed twice"
        passed[role] = where
    assert set(passed) == set(ROLE_SERVICES)
    # Both are part of the Covalent server's policy, and nowhere else.
    server = _merged_statements(tf, _doc_of(tf["resource"]["aws_iam_policy"]["covalent_server"]["policy"]))
    assert sum("iam:PassRole" in s["actions"] for s in server) == 2


def test_server_policy_covers_what_the_executor_calls(tf: dict[str, Any]) -> None:
    server = _merged_statements(tf, _doc_of(tf["resource"]["aws_iam_policy"]["covalent_server"]["policy"]))
    actions = {a for s in server if s["effect"] == "Allow" for a in s["actions"]}
    needed = {
        # byoc_executor/storage.py and byoc.py
        "s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload",
        # services/braket.py, services/sagemaker.py (+ tags at creation)
        "braket:CreateJob", "braket:GetJob", "braket:CancelJob", "braket:SearchJobs", "braket:TagResource",
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
        "sagemaker:ListTrainingJobs", "sagemaker:AddTags",
        # the log tail of a failed job
        "logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents",
        "iam:PassRole",
    }
    assert needed <= actions, sorted(needed - actions)
    assert not {a for a in actions if a.startswith("braket:") and "QuantumTask" in a}, "quantum tasks are the job's business"


def test_s3_access_stays_under_the_prefix(tf: dict[str, Any]) -> None:
    allowed_objects = {
        "${local.prefix_objects}", "${local.payload_objects}", "${local.source_objects}",
        "${local.output_objects}", "${local.quantum_task_objects}",
    }
    for where, statement in _statements(tf):
        s3_actions = [a for a in statement["actions"] if a.startswith("s3:")]
        if statement["effect"] != "Allow" or not s3_actions:
            continue
        if s3_actions == ["s3:ListBucket"]:
            assert statement["resources"] == ["${local.bucket_arn}"], where
            (prefix_condition,) = [v for (_, key), v in _conditions(statement).items() if key == "s3:prefix"]
            assert all(p.endswith("*") and not p.startswith("*") for p in prefix_condition), where
        else:
            assert "s3:ListBucket" not in s3_actions, where
            assert set(statement["resources"]) <= allowed_objects, f"{where}: {statement['resources']}"
    locals_ = tf["locals"]
    for name in ("prefix_objects", "payload_objects", "source_objects", "output_objects"):
        assert locals_[name].startswith("${local.bucket_arn}/${var.s3_prefix}/"), name
    # A job can read its inputs and write its outputs, never overwrite its own payload.
    job = _merged_statements(tf, "job_common")
    writes = [s for s in job if "s3:PutObject" in s["actions"]]
    assert [s["resources"] for s in writes] == [["${local.output_objects}"]]


def test_job_name_prefix_matches_the_executor() -> None:
    from byoc_executor.services import job_name

    prefix = _load()["locals"]["job_name_prefix"]
    for dispatch, node in [("be9fc297-f688-40e4-8106-34343184e025", 0), ("x" * 80, 12345), ("---", "7")]:
        assert job_name(dispatch, node).startswith(prefix)


def test_log_groups_are_the_services_own() -> None:
    from byoc_executor.services import braket, sagemaker

    locals_ = _load()["locals"]
    assert locals_["braket_log_group"] == braket.LOG_GROUP
    assert locals_["sagemaker_log_group"] == sagemaker.LOG_GROUP


# -- the bucket ---------------------------------------------------------------------------------------


def test_bucket_is_encrypted_private_tls_only_and_expires_artifacts(tf: dict[str, Any]) -> None:
    resources = tf["resource"]
    bucket_ref = "${aws_s3_bucket.artifacts.id}"

    (sse,) = resources["aws_s3_bucket_server_side_encryption_configuration"].values()
    assert sse["bucket"] == bucket_ref
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == '${local.use_kms ? "aws:kms" : "AES256"}'
    assert default["kms_master_key_id"] == "${local.use_kms ? var.kms_key_arn : null}"

    (block,) = resources["aws_s3_bucket_public_access_block"].values()
    assert block["bucket"] == bucket_ref
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[flag] is True, flag

    (ownership,) = resources["aws_s3_bucket_ownership_controls"].values()
    assert ownership["rule"][0]["object_ownership"] == "BucketOwnerEnforced"

    (policy,) = resources["aws_s3_bucket_policy"].values()
    assert policy["bucket"] == bucket_ref
    (deny,) = _policy_documents(tf)[_doc_of(policy["policy"])]["statement"]
    assert deny["effect"] == "Deny" and deny["actions"] == ["s3:*"]
    assert deny["principals"] == [{"type": "*", "identifiers": ["*"]}]
    assert _conditions(deny) == {("Bool", "aws:SecureTransport"): ["false"]}
    assert set(deny["resources"]) == {"${aws_s3_bucket.artifacts.arn}", "${aws_s3_bucket.artifacts.arn}/*"}

    (lifecycle,) = resources["aws_s3_bucket_lifecycle_configuration"].values()
    (rule,) = lifecycle["rule"]
    assert rule["status"] == "Enabled"
    assert rule["expiration"][0]["days"] == "${var.artifact_retention_days}"
    assert rule["abort_incomplete_multipart_upload"][0]["days_after_initiation"] >= 1

    assert resources["aws_s3_bucket"]["artifacts"]["force_destroy"] == "${var.force_destroy}"
    assert tf["variable"]["force_destroy"]["default"] is False
    assert tf["variable"]["kms_key_arn"]["default"] == ""
    assert "aws_kms_key" not in resources, "the module must not create a KMS key"


def test_repository_scans_on_push_and_keeps_the_last_n_images(tf: dict[str, Any]) -> None:
    repository = tf["resource"]["aws_ecr_repository"]["jobs"]
    assert repository["image_scanning_configuration"][0]["scan_on_push"] is True
    assert repository["image_tag_mutability"] == "${var.image_tag_mutability}"
    assert tf["variable"]["image_tag_mutability"]["default"] == "IMMUTABLE"
    lifecycle = tf["resource"]["aws_ecr_lifecycle_policy"]["jobs"]["policy"]
    assert "imageCountMoreThan" in lifecycle and "var.ecr_images_kept" in lifecycle
    # The optional build is off by default and calls the build script with its documented interface.
    assert tf["variable"]["build_image"]["default"] is False
    for name, body in tf["resource"]["terraform_data"].items():
        assert body["count"].startswith("${var.build_"), name
        command = body["provisioner"][0]["local-exec"]["command"]
        assert command.startswith("container/build_and_push.sh --repository-uri "), name
        assert "--region " in command and "--tag " in command, name


# -- variables and versions -------------------------------------------------------------------------


def test_variables_are_described_and_validated(tf: dict[str, Any]) -> None:
    variables = tf["variable"]
    for name, body in variables.items():
        assert len(body.get("description", "")) > 20, f"variable {name} needs a description"
        assert "type" in body, f"variable {name} needs a type"
    for name in ("name_prefix", "region", "default_service", "s3_prefix", "artifact_retention_days",
                 "kms_key_arn", "image_tag", "image_tag_mutability", "ecr_images_kept", "log_retention_days"):
        assert variables[name].get("validation"), f"variable {name} needs a validation block"
    assert {"enable_braket", "enable_sagemaker"} <= set(variables)
    for name, body in tf["output"].items():
        assert body.get("description"), f"output {name} needs a description"
    assert {"bucket_name", "image_uri", "braket_role_arn", "sagemaker_role_arn", "covalent_config",
            "covalent_server_policy_arn", "covalent_server_policy_json"} <= set(tf["output"])


def test_versions_are_pinned(tf: dict[str, Any]) -> None:
    (block,) = tf["terraform"]
    assert block["required_version"] == ">= 1.5"
    (providers,) = block["required_providers"]
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert re.fullmatch(r"~> 5\.\d+", providers["aws"]["version"])


def test_checkov_skips_each_give_a_reason() -> None:
    skips = []
    for path in TERRAFORM.glob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.{20,})", line)
                assert match, f"{path.name}: {line.strip()!r} needs the form #checkov:skip=CKV_...:<reason>"
                skips.append(match.group(1))
    assert skips


def test_files_look_terraform_formatted() -> None:
    """What `terraform fmt` would change, as far as a reader can tell without the binary."""
    for path in sorted(TERRAFORM.glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.name}:{number}"
            assert "\t" not in line and line == line.rstrip(), f"{where}: tabs or trailing blanks"
            indent = len(line) - len(line.lstrip(" "))
            assert indent % 2 == 0, f"{where}: indentation of {indent}"


# -- covalent_config --------------------------------------------------------------------------------


def render(template: str, values: dict[str, str]) -> str:
    """templatefile() for a template of plain ``${name}`` interpolations (it fails on a missing name)."""
    assert "%{" not in template, "keep the template free of directives"
    assert "$${" not in template, "keep the template free of escapes"

    def substitute(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", substitute, template)


def _parse_toml(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import toml

        return toml.loads(text)
    return tomllib.loads(text)


@pytest.mark.parametrize("service", ["braket", "sagemaker"])
def test_covalent_config_renders_to_a_section_the_executor_accepts(tf: dict[str, Any], service: str) -> None:
    from byoc_executor import BYOCExecutor
    from byoc_executor.settings import SETTING_NAMES, Settings

    template = TEMPLATE.read_text()
    placeholders = set(re.findall(r"\$\{([^}]*)\}", template))
    variables = tf["locals"]["covalent_config_vars"]
    assert placeholders == set(variables), "the template and local.covalent_config_vars must name the same values"
    assert tf["output"]["covalent_config"]["value"] == (
        '${templatefile("${path.module}/covalent_config.tftpl", local.covalent_config_vars)}'
    )
    assert variables["role_arn"] == '${var.default_service == "braket" ? local.braket_role_arn : local.sagemaker_role_arn}'

    # What an apply in us-west-2 with name_prefix = "team-q" would fill in.
    role = {"braket": "braket-jobs", "sagemaker": "sagemaker-jobs"}[service]
    values = {
        "service": service,
        "image_uri": f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/team-q-byoc-executor:0.1.0",
        "s3_bucket_name": f"amazon-braket-team-q-{ACCOUNT}-us-west-2",
        "s3_prefix": tf["variable"]["s3_prefix"]["default"],
        "role_arn": f"arn:aws:iam::{ACCOUNT}:role/team-q-{role}",
        "region": "us-west-2",
    }
    section = _parse_toml(render(template, values))["executors"]["byoc"]
    assert section == values
    assert set(section) <= set(SETTING_NAMES)
    Settings(**section).check_shapes(complete=True)  # complete: nothing required is missing
    executor = BYOCExecutor(**section)
    assert {name: getattr(executor, name) for name in section} == section


# -- checkov ----------------------------------------------------------------------------------------


def _checkov() -> Path:
    """checkov in its own virtualenv under .venv-tools/ (created once, reused after)."""
    exe = CHECKOV_VENV / "bin" / "checkov"
    stamp = CHECKOV_VENV / f".installed-checkov-{CHECKOV_VERSION}"
    if exe.exists() and stamp.exists():
        return exe
    venv.EnvBuilder(with_pip=True, clear=True).create(CHECKOV_VENV)
    pip = [str(CHECKOV_VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    done = subprocess.run([*pip, f"checkov=={CHECKOV_VERSION}"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pip install checkov=={CHECKOV_VERSION} failed:\n{done.stderr[-3000:]}"
    stamp.touch()
    return exe


def test_checkov_reports_no_failed_check() -> None:
    exe = _checkov()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_"))}
    done = subprocess.run(
        # --skip-download: no call to Prisma Cloud for guidelines (the run is offline and the same).
        [str(exe), "-d", str(TERRAFORM), "--compact", "--quiet", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), f"checkov crashed ({done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    terraform = [r for r in reports if r.get("check_type") == "terraform"]
    assert terraform, f"checkov found no terraform to check: {done.stdout[:500]}"
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"].get("failed_checks", [])]
    assert not failed, f"checkov failed checks: {failed}"
    summary = terraform[0]["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 100, summary
    assert summary["checkov_version"] == CHECKOV_VERSION
    assert done.returncode == 0
