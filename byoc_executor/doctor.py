"""``byoc-executor doctor``: the executor's own pre-flight checks, run against the configured account.

It takes the settings from the ``[executors.byoc]`` section of covalent.conf (as Covalent's client
sees it) with ``--set KEY=VALUE`` overrides, and runs the same checks ``run()`` does before it
submits anything, plus the ones a submission only discovers by failing: that the credentials
resolve and whose they are, that the bucket is reachable and writable under the prefix, and that
the job API answers. It prints one line per check and exits 1 if any failed. It creates no job;
it writes and deletes one small object under ``<s3_prefix>/.byoc-doctor/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from byoc_executor import aws, storage
from byoc_executor.errors import BYOCError
from byoc_executor.settings import SETTING_NAMES, Settings


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def settings_from(section: dict[str, Any], overrides: list[str]) -> Settings:
    """Settings from a config section and ``KEY=VALUE`` overrides (values parsed as JSON when they can be)."""
    values = {k: v for k, v in section.items() if k in SETTING_NAMES}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in SETTING_NAMES:
            raise SystemExit(f"--set takes KEY=VALUE with KEY one of: {', '.join(SETTING_NAMES)}; got {item!r}")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return Settings(**values)


async def diagnose(settings: Settings) -> list[Check]:
    """Run every check; a check that cannot run because an earlier one failed is not reported."""
    checks: list[Check] = []
    problems = settings.shape_problems()
    if not problems:
        problems = await asyncio.to_thread(settings.model_problems)
    for p in problems:
        checks.append(Check(f"setting {p.setting}", False, f"{p.problem}: {p.fix}"))
    if not problems:
        where = settings.endpoint_url or "AWS"
        checks.append(Check("settings", True, f"{settings.service} on {settings.instance_type}, endpoint {where}"))
    target = aws.AWSTarget.of(settings)
    pool = aws.pool()
    try:
        sts = await pool.client("sts", target)
        region = await pool.region(target)
    except BYOCError as e:
        checks.append(Check("credentials", False, str(e)))
        return checks
    try:
        identity = await sts.get_caller_identity()
        checks.append(Check("credentials", True, f"{identity['Arn']} (account {identity['Account']}), region {region}"))
        role_account = settings.role_arn.split(":")[4] if settings.role_arn.count(":") >= 5 else ""
        if role_account and role_account != identity["Account"]:
            checks.append(Check("role_arn", False, f"the role is in account {role_account}, the credentials in {identity['Account']}: use a role of this account"))
    except (ClientError, BotoCoreError) as e:
        checks.append(Check("credentials", False, f"STS GetCallerIdentity failed: {e}"))
        return checks
    if settings.s3_bucket_name:
        checks.append(await _check_bucket(pool, target, settings))
    checks.append(await _check_job_api(pool, target, settings))
    return checks


async def _check_bucket(pool: aws.ClientPool, target: aws.AWSTarget, settings: Settings) -> Check:
    s3 = await pool.client("s3", target)
    probe = storage.S3Location(settings.s3_bucket_name, f"{settings.s3_prefix.strip('/')}/.byoc-doctor/probe".lstrip("/"))
    try:
        await storage.head_bucket(s3, settings.s3_bucket_name)
        # Written as the executor writes: tagged (s3:PutObjectTagging) and, with kms_key_id, under SSE-KMS.
        tags = {"byoc:executor": "byoc-executor", **(settings.tags if settings.tag_objects else {})}
        await storage.put_bytes(s3, probe, b"byoc-executor doctor probe", tags, settings.kms_key_id)
        await s3.delete_object(Bucket=probe.bucket, Key=probe.key)
    except BYOCError as e:
        return Check(
            "bucket", False,
            f"{e}: create it (terraform/) or fix s3_bucket_name, and allow s3:PutObject, s3:PutObjectTagging and s3:DeleteObject on the prefix",
        )
    except ClientError as e:
        return Check("bucket", False, f"DeleteObject on {probe.uri}: {e}")
    return Check("bucket", True, f"s3://{settings.s3_bucket_name}/{settings.s3_prefix} is reachable and writable")


async def _check_job_api(pool: aws.ClientPool, target: aws.AWSTarget, settings: Settings) -> Check:
    client = await pool.client(settings.service, target)
    try:
        if settings.service == "braket":
            await client.search_jobs(filters=[], maxResults=1)
            return Check("job API", True, "Braket SearchJobs answers")
        await client.list_training_jobs(MaxResults=1)
        return Check("job API", True, "SageMaker ListTrainingJobs answers")
    except ClientError as e:
        error = e.response.get("Error", {})
        operation = "Braket SearchJobs" if settings.service == "braket" else "SageMaker ListTrainingJobs"
        return Check("job API", False, f"{operation} failed: {error.get('Code')}: {error.get('Message')}")


async def _run(settings: Settings) -> list[Check]:
    try:
        return await diagnose(settings)
    finally:
        await aws.close_clients()


def run_doctor(args: argparse.Namespace) -> int:
    """Entry of ``byoc-executor doctor``: print the checks; 0 if all passed, 1 if not."""
    from covalent._shared_files.config import get_config

    try:
        section = get_config("executors.byoc")
    except KeyError:
        section = {}
    settings = settings_from(section if isinstance(section, dict) else {}, args.set)
    print(f"byoc-executor doctor: checking the {settings.service} executor")
    checks = asyncio.run(_run(settings))
    for check in checks:
        print(check.line())
    failed = [c for c in checks if not c.ok]
    print(f"all {len(checks)} checks passed" if not failed else f"{len(failed)} of {len(checks)} checks failed")
    return 1 if failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the executor's settings, credentials, bucket and job API",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting of [executors.byoc] (repeatable)")
    parser.set_defaults(func=run_doctor)
