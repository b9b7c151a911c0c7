"""Request validation the way AWS does it, driven by botocore's own service models.

botocore's client checks only required members and Python types before it sends a request; the
services themselves also enforce lengths, value ranges, regular expressions, enums and list/map
sizes, and answer ``ValidationException`` with a message naming the field. The emulator walks the
operation's input shape from the model on disk, so its rules are AWS's rules, and adds the few
semantic checks (image URI, device ARN, S3 URIs) that the real services make behind the model.

Messages follow AWS's wording, e.g.::

    1 validation error detected: Value 'x y' at 'jobName' failed to satisfy constraint:
    Member must satisfy regular expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,50}
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterable

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from byoc_executor.local import s3_uris

# The emulator's own statement of these shapes, from AWS's sources (never the client's settings):
# - ECR image URIs: Amazon ECR user guide, "Amazon ECR private registry" (registry
#   <account>.dkr.ecr.<region>.amazonaws.com) and "Creating a repository" (names: lowercase
#   letters, digits, "._/-" separators); references ":<tag>" or "@sha256:<digest>". The Braket model's
#   ``Uri`` pattern (``\d{10,14}\.dkr\.ecr.[a-z0-9-]+\.amazonaws\.com\/.+(@sha256)?:.+``) is checked
#   by the model walk; SageMaker's ``AlgorithmImage`` pattern is ``.*``.
ECR_IMAGE_PATTERN = re.compile(
    r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?"
)
# Braket device ARNs (developer guide, "Amazon Braket supported devices") and embedded simulators
# (the Braket SDK's ``local:<provider>/<name>``); which ones exist is ``devices.py``'s table.
BRAKET_DEVICE_PATTERN = re.compile(r"arn:aws[a-z-]*:braket:[a-z0-9-]*::device/[\w.-]+/[\w.-]+/[\w.-]+|local:[\w.-]+/[\w.-]+")
# Both models' ``RoleArn`` pattern.
ROLE_ARN_PATTERN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")

_MAX_VALUE_SHOWN = 120


class ValidationError(Exception):
    """A request that the service refuses with ``ValidationException``.

    Attributes:
        problems: one AWS-worded sentence per failed constraint.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        count = len(self.problems)
        noun = "error" if count == 1 else "errors"
        super().__init__(f"{count} validation {noun} detected: " + "; ".join(self.problems))

    @property
    def message(self) -> str:
        """The message AWS would answer."""
        return str(self)


@functools.lru_cache(maxsize=None)
def service_model(service: str) -> ServiceModel:
    """The botocore model of ``service`` ("braket" or "sagemaker"), loaded once."""
    return botocore.session.get_session().get_service_model(service)


def operation_model(service: str, operation: str) -> OperationModel:
    """The botocore model of one operation, e.g. ``("braket", "CreateJob")``."""
    return service_model(service).operation_model(operation)


def enum_values(service: str, shape_name: str) -> list[str]:
    """The enum of a string shape in the model, e.g. ``("braket", "InstanceType")``."""
    return list(service_model(service).shape_for(shape_name).enum)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = str(value)
    if len(text) > _MAX_VALUE_SHOWN:
        text = text[: _MAX_VALUE_SHOWN - 3] + "..."
    return f"'{text}'"


def _problem(value: Any, path: str, constraint: str) -> str:
    return f"Value {_show(value)} at '{path}' failed to satisfy constraint: {constraint}"


def check_shape(shape: Shape, value: Any, path: str, lower_names: bool = False) -> list[str]:
    """Every constraint of ``shape`` that ``value`` breaks, as AWS-worded sentences.

    Args:
        shape: a botocore shape (structure, list, map or scalar).
        value: the decoded JSON value found at ``path``.
        path: where the value sits in the request, AWS style (``a.b``, ``list.1.member.c``).
        lower_names: name members in lowerCamelCase, as SageMaker's messages do
            (``trainingJobName`` for ``TrainingJobName``).

    Returns:
        The problems found, in walk order; empty when the value is valid.
    """
    kind = shape.type_name
    if kind == "structure":
        return _check_structure(shape, value, path, lower_names)
    if kind == "list":
        return _check_list(shape, value, path, lower_names)
    if kind == "map":
        return _check_map(shape, value, path, lower_names)
    if kind == "string":
        return _check_string(shape, value, path)
    if kind in ("integer", "long", "float", "double"):
        return _check_number(shape, value, path)
    if kind == "boolean" and not isinstance(value, bool):
        return [_problem(value, path, "Member must be of type boolean")]
    if kind == "timestamp" and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
        return [_problem(value, path, "Member must be a timestamp")]
    return []


def _check_structure(shape: Shape, value: Any, path: str, lower_names: bool) -> list[str]:
    if not isinstance(value, dict):
        return [_problem(value, path or "request", "Member must be a structure")]
    problems: list[str] = []
    for name, member in shape.members.items():
        shown = name[:1].lower() + name[1:] if lower_names else name
        where = f"{path}.{shown}" if path else shown
        if name not in value or value[name] is None:
            if name in shape.required_members:
                problems.append(_problem(None, where, "Member must not be null"))
            continue
        problems.extend(check_shape(member, value[name], where, lower_names))
    return problems


def _size_problems(shape: Shape, value: Any, path: str, size: int) -> list[str]:
    meta = shape.metadata
    if "min" in meta and size < meta["min"]:
        return [_problem(value, path, f"Member must have length greater than or equal to {meta['min']}")]
    if "max" in meta and size > meta["max"]:
        return [_problem(value, path, f"Member must have length less than or equal to {meta['max']}")]
    return []


def _check_list(shape: Shape, value: Any, path: str, lower_names: bool) -> list[str]:
    if not isinstance(value, list):
        return [_problem(value, path, "Member must be a list")]
    problems = _size_problems(shape, value, path, len(value))
    for index, item in enumerate(value, start=1):
        problems.extend(check_shape(shape.member, item, f"{path}.{index}.member", lower_names))
    return problems


def _check_map(shape: Shape, value: Any, path: str, lower_names: bool) -> list[str]:
    if not isinstance(value, dict):
        return [_problem(value, path, "Member must be a map")]
    problems = _size_problems(shape, value, path, len(value))
    for key, item in value.items():
        problems.extend(f"Map keys {p}" for p in check_shape(shape.key, key, path))
        problems.extend(check_shape(shape.value, item, f"{path}.{key}", lower_names))
    return problems


def _check_string(shape: Shape, value: Any, path: str) -> list[str]:
    if not isinstance(value, str):
        return [_problem(value, path, "Member must be of type string")]
    problems = _size_problems(shape, value, path, len(value))
    if problems:
        return problems
    if shape.enum and value not in shape.enum:
        return [_problem(value, path, f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")]
    pattern = shape.metadata.get("pattern")
    # AWS patterns are whole-value matches (Smithy @pattern anchors are implied in these models).
    compiled = _model_pattern(pattern) if pattern else None
    if compiled is not None and compiled.fullmatch(value) is None:
        return [_problem(value, path, f"Member must satisfy regular expression pattern: {pattern}")]
    return []


def _check_number(shape: Shape, value: Any, path: str) -> list[str]:
    integral = shape.type_name in ("integer", "long")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and not isinstance(value, int)):
        return [_problem(value, path, f"Member must be of type {shape.type_name}")]
    meta = shape.metadata
    if "min" in meta and value < meta["min"]:
        return [_problem(value, path, f"Member must have value greater than or equal to {meta['min']}")]
    if "max" in meta and value > meta["max"]:
        return [_problem(value, path, f"Member must have value less than or equal to {meta['max']}")]
    return []


def validate_input(service: str, operation: str, request: dict) -> None:
    """Check a decoded request against the operation's input shape.

    Raises:
        ValidationError: listing every broken constraint.
    """
    model = operation_model(service, operation)
    # json-1.1 services (SageMaker) name members in lowerCamelCase in their messages.
    lower_names = model.metadata.get("protocol") == "json"
    problems = check_shape(model.input_shape, request, "", lower_names)
    if problems:
        raise ValidationError(problems)


# --- semantic checks the services make beyond the model ------------------------------------------


# The models' patterns are Java regular expressions; Python's re lacks Unicode property classes.
# Inside a character class these stand-ins accept a superset (\w also holds digits and "_"), so a
# value AWS accepts is never refused here.
_JAVA_CLASSES = {r"\p{L}": r"\w", r"\p{M}": r"\w", r"\p{N}": r"\d", r"\p{Z}": r"\s", r"\p{S}": r"\W", r"\p{P}": r"\W"}


@functools.lru_cache(maxsize=None)
def _model_pattern(pattern: str) -> re.Pattern | None:
    """A model pattern compiled for Python; None (no check) for the rare one Python cannot read."""
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    try:
        return re.compile(pattern, flags=re.DOTALL)
    except re.error:
        return None


def check_pattern(value: Any, path: str, pattern: re.Pattern, what: str) -> list[str]:
    """One problem if ``value`` is a string that is not ``what`` (shaped like ``pattern``)."""
    if isinstance(value, str) and pattern.fullmatch(value) is None:
        return [_problem(value, path, f"Member must be {what}")]
    return []


def check_image_uri(value: Any, path: str) -> list[str]:
    """An Amazon ECR image URI: ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>[:tag|@sha256:...]``."""
    return check_pattern(
        value, path, ECR_IMAGE_PATTERN,
        "an Amazon ECR image URI (<12-digit account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag])",
    )


def check_s3_uri(value: Any, path: str) -> list[str]:
    """An ``s3://bucket/...`` URI or an ``https://`` S3 URL (both models' pattern allows both), with a valid bucket name."""
    if isinstance(value, str) and s3_uris.parse(value) is None:
        return [_problem(value, path, "Member must be an S3 URI of the form s3://bucket/prefix or an https:// S3 URL of the bucket")]
    return []


def check_role_arn(value: Any, path: str) -> list[str]:
    """An IAM role ARN: ``arn:aws:iam::<12 digits>:role/<name>``."""
    return check_pattern(value, path, ROLE_ARN_PATTERN, "an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")


def check_braket_device(value: Any, path: str) -> list[str]:
    """A Braket device: ``arn:aws:braket:<region>::device/...`` or ``local:<provider>/<name>``."""
    return check_pattern(
        value, path, BRAKET_DEVICE_PATTERN,
        "a Braket device ARN (arn:aws:braket:<region>::device/...) or a local simulator (local:<provider>/<name>)",
    )


def raise_if(problems: Iterable[str]) -> None:
    """Raise one ``ValidationError`` carrying all ``problems``, if there are any.

    Raises:
        ValidationError: when ``problems`` is not empty.
    """
    problems = list(problems)
    if problems:
        raise ValidationError(problems)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` (or an https S3 URL) -> ``("bucket", "a/b")`` (no leading or trailing slash on the key)."""
    return s3_uris.split_s3_uri(uri)
