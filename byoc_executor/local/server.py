"""The local emulator: one loopback HTTP endpoint speaking AWS's wire protocols.

Requests are routed by the service name in their SigV4 credential scope (the ``Authorization``
header, or ``X-Amz-Credential`` for presigned URLs):

- ``braket``: the hybrid-job API (rest-json): ``POST /job``, ``GET /job/{jobArn}``,
  ``PUT /job/{jobArn}/cancel``, ``POST /jobs``;
- ``sagemaker`` with ``X-Amz-Target: SageMaker.{Create,Describe,Stop,List}TrainingJob(s)``:
  the training-job API (json-1.1);
- anything else (S3, CloudWatch Logs, STS, other SageMaker calls): moto, in process.

Plain boto3/aiobotocore clients work unchanged with ``endpoint_url=emulator.url``, with any
credentials and region. Unsigned requests under ``/_byoc/`` are the admin surface for tests:
``GET /_byoc/jobs`` (a JSON list of ``{name, service, status, pid, arn}``) and
``POST /_byoc/jobs/<jobName>/kill`` (the killed job's entry; 404 unknown, 409 not running).

Fault injection seam: every job-API call passes through :attr:`Emulator.request_hooks` first;
a hook may answer in the service's place (throttling, 5xx) by returning a response.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from byoc_executor.local.hybrid_jobs import BraketApi
from byoc_executor.local.jobs import ApiError, JobContext, Timing
from byoc_executor.local.launchers import Launcher, ProcessLauncher
from byoc_executor.local.registry import JobRegistry
from byoc_executor.local.staging import AwsClients
from byoc_executor.local.training_jobs import SageMakerApi
from byoc_executor.local.validation import ValidationError

DEFAULT_REGION = "us-east-1"
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_QUERY_SCOPE = re.compile(r"^[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request$")
SAGEMAKER_OPERATIONS = ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "ListTrainingJobs")
_JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class ApiCall:
    """One job-API request, as the fault-injection hooks see it."""

    service: str
    operation: str
    region: str
    request: Request


RequestHook = Callable[[ApiCall], "Response | None"]


class _QuietHandler(MotoRequestHandler):
    """moto's handler (keeps S3 metadata header spelling) without a log line per request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def credential_scope(request: Request) -> tuple[str | None, str]:
    """(service, region) from the request's SigV4 credential scope; (None, default) if unsigned."""
    match = _SCOPE.search(request.headers.get("Authorization", ""))
    if match is None:
        match = _QUERY_SCOPE.match(request.args.get("X-Amz-Credential", ""))
    if match is None:
        return None, DEFAULT_REGION
    return match.group(2), match.group(1)


class Emulator:
    """Braket and SageMaker job APIs over moto, on ``http://127.0.0.1:<port>``.

    Example::

        with Emulator() as emulator:
            s3 = boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1", ...)

    Args:
        host: the interface to bind; loopback only.
        port: the port; 0 picks a free one (see :attr:`url` after :meth:`start`).
        root: where job trees go (``<root>/<jobName>/``); a temporary directory, removed on
            :meth:`stop`, when not given.
        launcher: how jobs are started; :class:`ProcessLauncher` by default.
        phase_delay: seconds spent in each of the queued, starting, downloading and uploading phases.
        kill_grace: seconds between SIGTERM and SIGKILL when a job is cancelled or stopped.
        log_flush_interval: seconds between CloudWatch Logs batches.

    Raises:
        ValueError: ``host`` is not a loopback address.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        root: str | Path | None = None,
        launcher: Launcher | None = None,
        phase_delay: float = 0.1,
        kill_grace: float = 2.0,
        log_flush_interval: float = 0.2,
    ):
        if not _is_loopback(host):
            raise ValueError(f"the emulator binds loopback addresses only, not {host!r}: use 127.0.0.1")
        self.host = host
        self.port = port
        self.root = Path(root) if root is not None else None
        self.launcher = launcher or ProcessLauncher()
        self.timing = Timing(phase_delay=phase_delay, kill_grace=kill_grace, log_flush_interval=log_flush_interval)
        self.request_hooks: list[RequestHook] = []
        self._owns_root = False
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._registry: JobRegistry | None = None
        self._braket: BraketApi | None = None
        self._sagemaker: SageMakerApi | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the emulator is not started: call start() first")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> "Emulator":
        """Bind, start serving in a background thread, and return self."""
        if self._server is not None:
            return self
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="byoc-emulator-"))
            self._owns_root = True
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = make_server(self.host, self.port, self, threaded=True, request_handler=_QuietHandler)
        self._server.daemon_threads = True
        context = JobContext(endpoint_url=self.url, clients=AwsClients(self.url), launcher=self.launcher, timing=self.timing)
        self._registry = JobRegistry(self.root)
        self._braket = BraketApi(self._registry, context)
        self._sagemaker = SageMakerApi(self._registry, context)
        self._thread = threading.Thread(target=self._server.serve_forever, name="byoc-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill every job's processes, wait for the job threads, stop serving, clean up."""
        if self._server is None:
            return
        jobs = self._registry.all() if self._registry else []
        for job in jobs:
            job.abandon()
        for job in jobs:
            job.join(_JOIN_TIMEOUT)
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
        if self._owns_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root, self._owns_root = None, False

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the admin surface (also over HTTP under /_byoc/) --------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """Every job: name, service, status, pid, arn."""
        return [job.admin_view() for job in (self._registry.all() if self._registry else [])]

    def kill(self, job_name: str) -> dict[str, Any]:
        """SIGKILL a running job's processes, as if its container crashed or was OOM-killed.

        Raises:
            KeyError: no job has that name.
            RuntimeError: the job has no running process.
        """
        jobs = self._registry.by_name(job_name) if self._registry else []
        if not jobs:
            raise KeyError(job_name)
        for job in jobs:
            if job.kill():
                return job.admin_view()
        raise RuntimeError(f"job {job_name} has no running process")

    def _admin(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET" and parts == ["_byoc", "jobs"]:
            return _json_response(200, self.jobs())
        if request.method == "POST" and len(parts) == 4 and parts[:2] == ["_byoc", "jobs"] and parts[3] == "kill":
            try:
                return _json_response(200, self.kill(parts[2]))
            except KeyError:
                return _json_response(404, {"message": f"no job named {parts[2]}"})
            except RuntimeError as e:
                return _json_response(409, {"message": str(e)})
        return _json_response(404, {"message": f"no admin route {request.method} {request.path}"})

    # --- WSGI ----------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        if request.path.startswith("/_byoc/"):
            return self._admin(request)(environ, start_response)
        service, region = credential_scope(request)
        if service == "braket":
            response = self._braket_call(request, region)
        elif service == "sagemaker" and request.headers.get("X-Amz-Target", "").split(".")[-1] in SAGEMAKER_OPERATIONS:
            response = self._sagemaker_call(request, region)
        else:
            return self._moto(environ, start_response)
        return response(environ, start_response)

    def _hooked(self, call: ApiCall) -> Response | None:
        for hook in self.request_hooks:
            answer = hook(call)
            if answer is not None:
                return answer
        return None

    def _braket_call(self, request: Request, region: str) -> Response:
        raw_path = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
        path = raw_path.split("?", 1)[0]
        method = request.method
        if method == "POST" and path == "/job":
            operation = "CreateJob"
        elif method == "POST" and path == "/jobs":
            operation = "SearchJobs"
        elif method == "PUT" and path.startswith("/job/") and path.endswith("/cancel"):
            operation = "CancelJob"
        elif method == "GET" and path.startswith("/job/"):
            operation = "GetJob"
        else:
            return _braket_error(ApiError("UnknownOperationException", f"The emulator does not serve {method} {path}", 404))
        hooked = self._hooked(ApiCall("braket", operation, region, request))
        if hooked is not None:
            return hooked
        assert self._braket is not None
        try:
            if operation == "CreateJob":
                status, body = self._braket.create_job(region, _json_body(request))
                return _json_response(status, body)
            if operation == "SearchJobs":
                return _json_response(200, self._braket.search_jobs(_json_body(request)))
            arn = unquote(path[len("/job/"):].removesuffix("/cancel") if operation == "CancelJob" else path[len("/job/"):])
            if operation == "CancelJob":
                return _json_response(200, self._braket.cancel_job(arn))
            return _json_response(200, self._braket.get_job(arn))
        except ValidationError as e:
            return _braket_error(ApiError("ValidationException", e.message, 400))
        except ApiError as e:
            return _braket_error(e)

    def _sagemaker_call(self, request: Request, region: str) -> Response:
        operation = request.headers["X-Amz-Target"].split(".")[-1]
        hooked = self._hooked(ApiCall("sagemaker", operation, region, request))
        if hooked is not None:
            return hooked
        api = self._sagemaker
        assert api is not None
        try:
            body = _json_body(request)
            if operation == "CreateTrainingJob":
                answer = api.create_training_job(region, body)
            elif operation == "DescribeTrainingJob":
                answer = api.describe_training_job(body)
            elif operation == "StopTrainingJob":
                answer = api.stop_training_job(body)
            else:
                answer = api.list_training_jobs(body)
        except ValidationError as e:
            return _sagemaker_error(ApiError("ValidationException", e.message))
        except ApiError as e:
            return _sagemaker_error(e)
        return Response(json.dumps(answer), status=200, content_type="application/x-amz-json-1.1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_body(request: Request) -> dict:
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


def _json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _braket_error(error: ApiError) -> Response:
    """rest-json errors: the code in ``x-amzn-ErrorType``, the message in the body."""
    response = _json_response(error.status, {"message": error.message})
    response.headers["x-amzn-ErrorType"] = error.code
    return response


def _sagemaker_error(error: ApiError) -> Response:
    """json-1.1 errors: ``{"__type": code, "message": ...}`` (all SageMaker errors are 400s)."""
    body = {"__type": error.code, "message": error.message}
    return Response(json.dumps(body), status=400, content_type="application/x-amz-json-1.1")
