"""What the executor does when an AWS call fails while it follows a job: one written policy.

A job costs money while it runs, and its result may be hours of QPU or GPU time. So a call that
fails while the executor follows a job (status, cancel) never ends the electron by itself: every
condition that passes is waited out with backoff, for as long as the job itself may live (its
deadlines, ``follow.py``), and reported as a ``[byoc]`` line once it has lasted a while. Only a
definitive answer ends the following. botocore's own retries (``aws.py``) come first; this policy
applies to what is left after them.

The table (``POLICY``) names each condition by its AWS error code or exception class, never by
message text; the README's table is generated from it (``policy_table()``). A code found nowhere
in the table is judged by its HTTP status: 5xx passes, 4xx is definitive.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ConnectionError as BotoConnectionError, CredentialRetrievalError, NoCredentialsError

from byoc_executor.errors import AWSError, ResourceNotFoundError


class Verdict(enum.Enum):
    """What a failed call means for the following of a job."""

    TRANSIENT = "wait and retry"
    """A condition that passes: retry with backoff for as long as the job may live."""
    NOT_FOUND = "wait and retry, then give up"
    """The job is not found: normal for a moment after it was created (the APIs are eventually
    consistent); after ``NOT_FOUND_WINDOW`` seconds, it is gone for good."""
    FATAL = "give up"
    """A definitive answer: following cannot go on."""
    CAPACITY = "wait while this server's own jobs hold the quota, else give up"
    """A create refused because the account's instance quota is in use: capacity comes back when
    jobs end. Worth waiting for (up to ``queue_timeout``) only while this server's own jobs of the
    same kind hold some of it; otherwise nothing here will free it (a quota of 0, or other users'
    jobs), and the refusal is definitive."""


NOT_FOUND_WINDOW = 120.0
"""Seconds after submission during which "not found" means "not visible yet" (a choice: AWS
publishes no bound for its eventual consistency; it is usually seconds)."""


@dataclass(frozen=True)
class Rule:
    """One row of the policy: the conditions, their verdict, why."""

    conditions: tuple[str, ...]
    verdict: Verdict
    why: str


POLICY: tuple[Rule, ...] = (
    Rule(
        ("ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
         "SlowDown", "ProvisionedThroughputExceededException"),
        Verdict.TRANSIENT,
        "throttling: the account's request rate is shared by every electron and every other client",
    ),
    Rule(
        ("InternalServerException", "InternalServerError", "InternalFailure", "ServiceUnavailable",
         "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException", "HTTP 5xx"),
        Verdict.TRANSIENT,
        "the service failed or timed out on its side",
    ),
    Rule(
        ("ExpiredToken", "ExpiredTokenException", "RequestExpired", "CredentialRetrievalError", "NoCredentialsError"),
        Verdict.TRANSIENT,
        "credentials expired or could not be fetched: the credential chain refreshes them",
    ),
    Rule(
        ("connection error", "read or connect timeout", "asyncio.TimeoutError"),
        Verdict.TRANSIENT,
        "the network between the Covalent server and AWS",
    ),
    Rule(
        ("ResourceNotFoundException", "ResourceNotFound", "SageMaker ValidationException on DescribeTrainingJob"),
        Verdict.NOT_FOUND,
        f"not visible yet for up to {NOT_FOUND_WINDOW:.0f} s after the job was created; later: the job is gone",
    ),
    Rule(
        ("ResourceLimitExceeded", "ServiceQuotaExceededException"),
        Verdict.CAPACITY,
        "a create over the account's instance quota (e.g. 256 electrons at once): the electron waits, like a "
        "queued job, for one of this server's jobs to end (at most queue_timeout); with none running, it fails "
        "with the fix (Service Quotas)",
    ),
    Rule(
        ("AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
         "SignatureDoesNotMatch", "any other HTTP 4xx"),
        Verdict.FATAL,
        "a definitive refusal: the credentials may not do this, or the request is wrong",
    ),
)

_BY_CODE = {code: rule.verdict for rule in POLICY for code in rule.conditions}


def classify(error: BaseException) -> Verdict:
    """The verdict of ``error``, raised by a job service or the AWS client while following a job."""
    if isinstance(error, ResourceNotFoundError):  # the services translate their own not-found answers to it
        return Verdict.NOT_FOUND
    if isinstance(error, AWSError):
        verdict = _BY_CODE.get(error.code)
        if verdict is not None:
            return verdict
        return Verdict.TRANSIENT if error.http_status >= 500 else Verdict.FATAL
    if isinstance(error, (NoCredentialsError, CredentialRetrievalError)):
        return Verdict.TRANSIENT
    if isinstance(error, (BotoConnectionError, BotoCoreError, OSError, asyncio.TimeoutError)):
        # botocore's connection and timeout errors, aiohttp's (OSError subclasses) and our own.
        return Verdict.TRANSIENT
    return Verdict.FATAL


def describe(error: BaseException) -> str:
    """A short name for the condition, for the ``[byoc]`` lines."""
    if isinstance(error, AWSError):
        return f"{error.operation}: {error.code}"
    return type(error).__name__


def policy_table() -> str:
    """The README's table of the policy, in Markdown."""
    rows = ["| condition | what the executor does | why |", "| --- | --- | --- |"]
    for rule in POLICY:
        rows.append(f"| {', '.join(f'`{c}`' if c[0].isupper() and ' ' not in c else c for c in rule.conditions)} | {rule.verdict.value} | {rule.why} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(policy_table())
