"""The project's exceptions, and the one place where AWS errors become them.

Every exception carries fields (the setting, the job, the status, the reason) rather than only a
message, so callers and tests can act on them without reading text.
"""

from __future__ import annotations

from typing import NoReturn


class BYOCError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(BYOCError, ValueError):
    """A setting is wrong. Raised before anything is uploaded or submitted."""

    def __init__(self, setting: str, problem: str, fix: str):
        self.setting, self.problem, self.fix = setting, problem, fix
        super().__init__(f"byoc executor setting '{setting}' {problem}: {fix}.")


class TaskEncodingError(BYOCError):
    """The electron's function or arguments cannot be pickled."""


class AWSError(BYOCError):
    """An AWS call failed for a reason retries do not fix."""

    def __init__(self, operation: str, code: str, message: str, *, resource: str = "", http_status: int = 0):
        self.operation, self.code, self.message, self.resource = operation, code, message, resource
        self.http_status = http_status
        """The answer's HTTP status (0: unknown)."""
        where = f" ({resource})" if resource else ""
        super().__init__(f"{operation} failed{where}: {code}: {message}")


class AccessDeniedError(AWSError):
    """The credentials are not allowed to do this."""


class ResourceNotFoundError(AWSError):
    """The bucket, object or job does not exist."""


class AlreadyExistsError(AWSError):
    """A job of that name exists already (the submit path adopts it)."""


class InvalidRequestError(AWSError):
    """The service refused the request's shape."""


class ThrottledError(AWSError):
    """Still throttled after botocore's retries."""


class CredentialsError(BYOCError):
    """No AWS credentials could be found."""


class JobError(BYOCError):
    """A job did not produce a usable result."""

    def __init__(self, message: str, *, job_id: str = "", status: str = "", reason: str = "", logs: str = ""):
        self.job_id, self.status, self.reason, self.logs = job_id, status, reason, logs
        super().__init__(message)


class ResultError(JobError):
    """The job ended but its result is missing, truncated or fails verification."""


class FollowError(JobError):
    """Following a job ended on a definitive answer (policy.py) or a deadline, not on the job's end."""


# AWS error code -> exception class. Codes, never message text, decide.
_BY_CODE: dict[str, type[AWSError]] = {
    "AccessDenied": AccessDeniedError,
    "AccessDeniedException": AccessDeniedError,
    "UnrecognizedClientException": AccessDeniedError,
    "InvalidClientTokenId": AccessDeniedError,
    "ExpiredToken": AccessDeniedError,
    "ExpiredTokenException": AccessDeniedError,
    "SignatureDoesNotMatch": AccessDeniedError,
    "NoSuchBucket": ResourceNotFoundError,
    "NoSuchKey": ResourceNotFoundError,
    "404": ResourceNotFoundError,
    "NotFound": ResourceNotFoundError,
    "ResourceNotFoundException": ResourceNotFoundError,
    "ResourceNotFound": ResourceNotFoundError,
    "ResourceInUse": AlreadyExistsError,
    "ConflictException": AlreadyExistsError,
    "ValidationException": InvalidRequestError,
    "InvalidRequest": InvalidRequestError,
    "ThrottlingException": ThrottledError,
    "Throttling": ThrottledError,
    "SlowDown": ThrottledError,
}


def raise_aws_error(exc: Exception, operation: str, resource: str = "") -> NoReturn:
    """Re-raise a botocore ``ClientError`` as this package's exception, keeping it as ``__cause__``.

    Raises:
        AWSError: always (a subclass chosen by the error code).
    """
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    code = str(error.get("Code", type(exc).__name__))
    message = str(error.get("Message", "") or exc)
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    raise _BY_CODE.get(code, AWSError)(operation, code, message, resource=resource, http_status=status) from exc
