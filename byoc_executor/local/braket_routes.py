"""The Braket API's routes (rest-json, model ``braket/2019-09-01``): which operation, which answer.

Served: CreateJob, GetJob (``additionalAttributeNames=QueueInfo``), CancelJob, SearchJobs;
CreateQuantumTask, GetQuantumTask, CancelQuantumTask, SearchQuantumTasks; GetDevice,
SearchDevices (``devices.py``); ListTagsForResource of a job or a quantum task. Every other
operation of the model (TagResource, UntagResource, the spending limits) and any other path is
answered ``UnknownOperationException`` in rest-json's error form (``wire.py``), never plain text.
Requests are scoped to the region of their SigV4 credential: another region's jobs and tasks
are not found.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from byoc_executor.local import devices, validation
from byoc_executor.local.hybrid_jobs import BraketApi
from byoc_executor.local.job_types import ApiError
from byoc_executor.local.operations import braket_operation, raw_path
from byoc_executor.local.quantum_tasks import QuantumTasks
from byoc_executor.local.registry import paginate
from byoc_executor.local.validation import ValidationError


def answer(request: Request, region: str, braket: BraketApi, tasks: QuantumTasks) -> Response:
    """The answer to one Braket request from a client in ``region``."""
    path = raw_path(request)
    operation = braket_operation(request)
    if operation is None or operation in ("TagResource", "UntagResource"):
        what = operation or f"{request.method} {path}"
        return error(ApiError("UnknownOperationException", f"The emulator does not implement {what}", 404))
    try:
        return _answer(operation, path, request, region, braket, tasks)
    except ValidationError as e:
        return error(ApiError("ValidationException", e.message, 400))
    except ApiError as e:
        return error(e)


def _answer(operation: str, path: str, request: Request, region: str, braket: BraketApi, tasks: QuantumTasks) -> Response:
    if operation == "CreateQuantumTask":
        status, body = tasks.create(region, json_body(request))
        return json_response(status, body)
    if operation == "GetQuantumTask":
        return json_response(200, tasks.get(unquote(path[len("/quantum-task/"):]), region))
    if operation == "CancelQuantumTask":
        arn = unquote(path[len("/quantum-task/"):].removesuffix("/cancel"))
        return json_response(200, tasks.cancel(arn, region, json_body(request)))
    if operation == "SearchQuantumTasks":
        return json_response(200, tasks.search(region, json_body(request)))
    if operation == "GetDevice":
        arn = unquote(path[len("/device/"):])
        validation.validate_input("braket", "GetDevice", {"deviceArn": arn})
        return json_response(200, devices.get_device(arn, region))
    if operation == "SearchDevices":
        body = json_body(request)
        validation.validate_input("braket", "SearchDevices", body)
        found, token = paginate(devices.search_devices(body, region), body.get("nextToken"), body.get("maxResults", 100))
        return json_response(200, {"devices": found, **({"nextToken": token} if token else {})})
    if operation == "ListTagsForResource":
        return json_response(200, {"tags": _tags_of(unquote(path[len("/tags/"):]), region, braket, tasks)})
    if operation == "CreateJob":
        status, body = braket.create_job(region, json_body(request))
        return json_response(status, body)
    if operation == "SearchJobs":
        return json_response(200, braket.search_jobs(json_body(request), region))
    if operation == "CancelJob":
        return json_response(200, braket.cancel_job(unquote(path[len("/job/"):].removesuffix("/cancel")), region))
    attributes = tuple(request.args.getlist("additionalAttributeNames"))
    return json_response(200, braket.get_job(unquote(path[len("/job/"):]), region, attributes))


def _tags_of(arn: str, region: str, braket: BraketApi, tasks: QuantumTasks) -> dict[str, str]:
    """ListTagsForResource of a job or quantum task.

    Raises:
        ApiError: ResourceNotFoundException for an ARN of neither (AWS's wording unconfirmed).
    """
    for source in (braket.tags_of, tasks.tags_of):
        tags = source(arn, region)
        if tags is not None:
            return tags
    raise ApiError("ResourceNotFoundException", f"Resource {arn} not found.", 404)


def json_body(request: Request) -> dict:
    """The request's JSON object (``{}`` for an empty body).

    Raises:
        ApiError: SerializationException for a body that is not a JSON object.
    """
    raw = request.get_data()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise ApiError("SerializationException", f"The request body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise ApiError("SerializationException", "The request body must be a JSON object")
    return body


def json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def error(e: ApiError) -> Response:
    """rest-json errors: the code in ``x-amzn-ErrorType``, the message in the body."""
    response = json_response(e.status, {"message": e.message})
    response.headers["x-amzn-ErrorType"] = e.code
    return response
