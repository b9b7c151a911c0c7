"""The local emulator: one loopback HTTP endpoint speaking AWS's wire protocols.

Requests are routed by the service name in their SigV4 credential scope (the ``Authorization``
header, or ``X-Amz-Credential`` for presigned URLs):

- ``braket``: the hybrid-job API (rest-json): ``POST /job``, ``GET /job/{jobArn}``,
  ``PUT /job/{jobArn}/cancel``, ``POST /jobs``; and quantum tasks (``quantum_tasks.py``):
  ``POST /quantum-task``, ``GET /quantum-task/{quantumTaskArn}``;
- ``sagemaker`` with ``X-Amz-Target: SageMaker.{Create,Describe,Stop,List}TrainingJob(s)``:
  the training-job API (json-1.1); ``SageMaker.ListTags`` of a training job's ARN too;
- anything else (S3, CloudWatch Logs, STS, other SageMaker calls): moto, in process.

Plain boto3/aiobotocore clients work unchanged with ``endpoint_url=emulator.url``, with any
credentials and region. Unsigned requests under ``/_byoc/`` are the admin surface for tests:

- ``GET /_byoc/jobs``: a JSON list of ``{name, service, status, pid, arn}``;
- ``POST /_byoc/jobs/<jobName>/kill``: the killed job's entry (404 unknown, 409 not running);
- ``POST /_byoc/jobs/<jobName>/interrupt``: a spot interruption of a running managed spot
  training job; it restarts (404 unknown, 409 not a running spot job);
- ``GET /_byoc/quantum-tasks``: every quantum task created, with the ``jobToken`` it carried;
- ``GET /_byoc/usage``: :meth:`Emulator.usage` (requests per operation, throttling, each job's
  billed instance-seconds, in AWS seconds); ``DELETE`` answers the same and zeroes the request counts;
- ``POST /_byoc/jobs/<jobName>/tamper`` with a :class:`~byoc_executor.local.faults.JobFault`
  document (``{"action": "delete-input" | "delete" | "truncate" | "flip-byte" | "replace", ...}``):
  arms it for that job, which may not exist yet (400 malformed, 409 too late);
- ``POST /_byoc/faults`` with a :class:`~byoc_executor.local.faults.FaultPlan` document installs
  it; ``GET /_byoc/faults`` answers the plan, its counters and the job faults; ``DELETE`` removes
  the plan and disarms every job fault, answering the final counters.

Every client request, of any service, is first offered to :attr:`Emulator.request_hooks` (a hook
may answer in the service's place), then to :attr:`Emulator.faults`. The emulator's own requests
(its ``staging.AwsClients``, which carry ``x-byoc-internal`` with a secret drawn per emulator)
skip both: faults aimed at clients never break the emulator's own input downloads, result
uploads and log shipping.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from byoc_executor.local import braket_routes, wire
from byoc_executor.local.aws_profile import AwsClock, AwsProfile, RateLimiter, Usage
from byoc_executor.local.faults import AFTER, FaultPlan, JobFault, JobFaults, TooLate
from byoc_executor.local.hybrid_jobs import BraketApi
from byoc_executor.local.jobs import ApiError, JobContext, Timing
from byoc_executor.local.launchers import Launcher
from byoc_executor.local.operations import operation_name
from byoc_executor.local.quantum_tasks import QuantumTasks
from byoc_executor.local.registry import JobRegistry
from byoc_executor.local.staging import INTERNAL_HEADER, AwsClients
from byoc_executor.local.training_jobs import SageMakerApi
from byoc_executor.local.validation import ValidationError

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_QUERY_SCOPE = re.compile(r"^[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request$")
SAGEMAKER_OPERATIONS = ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "ListTrainingJobs")
_JOIN_TIMEOUT = 30.0


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ApiCall:
    """One client request, as the request hooks see it (``operation`` is its AWS name, e.g. ``PutObject``)."""

    service: str
    operation: str
    region: str
    request: Request


RequestHook = Callable[[ApiCall], "Response | None"]


class _BodyReader:
    """``wsgi.input`` for a request with a Content-Length: never reads past the body, and can skip
    what the application left unread, so that the next request on the connection starts clean."""

    def __init__(self, stream: Any, length: int):
        self._stream, self.remaining = stream, length

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._stream.read(size) if size else b""
        self.remaining -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._stream.readline(size) if size else b""
        self.remaining -= len(data)
        return data

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def skip_rest(self) -> None:
        while self.remaining and self.read(1 << 20):
            pass


class _QuietHandler(MotoRequestHandler):
    """moto's handler (keeps S3 metadata header spelling), with keep-alive connections and no log
    line per request.

    Werkzeug's development server closes every connection after one response. AWS keeps them
    open, and so do its clients: a new TCP connection per call would make everything measured
    against the emulator (client CPU, latency) look worse than it is against AWS. So requests
    with a Content-Length body (every botocore request) are served here with HTTP/1.1
    keep-alive; anything else (a chunked body) goes through werkzeug, which closes.
    """

    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds an idle kept-alive connection holds its thread
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out"):
            return  # an idle kept-alive connection reaching ``timeout``: routine, not an error
        super().log_error(format, *args)

    def run_wsgi(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            super().run_wsgi()
            self.close_connection = True
            return
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        body = _BodyReader(self.rfile, int(self.headers.get("Content-Length") or 0))
        environ["wsgi.input"] = body
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:
            log.exception("the emulator failed on %s %s", self.command, self.path)
            started[:] = ["500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")]]
            chunks = [b"the emulator failed on this request; see its log"]
        body.skip_rest()
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        names = set()
        for name, value in headers:
            self.send_header(name, value)
            names.add(name.lower())
        payload = b"".join(chunks)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)
        self.wfile.flush()


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
        profile: AWS's timing and limits (``aws_profile.profile("aws", time_scale)``): phase
            durations, log lag, the not-found window after a create, instance quotas and request
            quotas. None: ``phase_delay`` everywhere and no limits. Either way every client
            request is counted (:meth:`usage`).

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
        profile: AwsProfile | None = None,
    ):
        if not is_loopback_host(host):
            raise ValueError(f"the emulator binds loopback addresses only, not {host!r}: use 127.0.0.1")
        self.host = host
        self.port = port
        self.root = Path(root) if root is not None else None
        if launcher is None:
            # The default "image" is the byoc-executor image as a process (byoc_image.py): the
            # one module that knows the client's image; the service modules know only Launcher.
            from byoc_executor.local.byoc_image import ByocImageLauncher

            launcher = ByocImageLauncher()
        self.launcher = launcher
        self.profile = profile
        if profile is None:
            self.timing = Timing(phase_delay=phase_delay, kill_grace=kill_grace, log_flush_interval=log_flush_interval)
        else:
            self.timing = Timing(
                phase_delay=phase_delay, kill_grace=kill_grace, log_flush_interval=log_flush_interval,
                phases={service: profile.phase_seconds(service) for service in profile.phases},
                log_lag=profile.wall(profile.log_lag), not_found_window=profile.wall(profile.not_found_window),
                instance_quota=profile.instance_quota, time_scale=profile.time_scale,
            )
        self.usage_record = Usage(AwsClock(profile.time_scale if profile else 1.0))
        """Every client request by operation (AWS time), throttled or not; see :meth:`usage`."""
        self.request_hooks: list[RequestHook] = [RateLimiter(profile.rate_limits if profile else {}, self.usage_record)]
        """Offered every client request in order; the first, the rate limiter, counts them all."""
        self.faults: FaultPlan | None = None
        """Which client requests fail (None: none). Replace it at any time; see ``faults.py``."""
        self.job_faults = JobFaults()
        self._internal_token = secrets.token_hex(16)
        self._owns_root = False
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._registry: JobRegistry | None = None
        self._braket: BraketApi | None = None
        self._sagemaker: SageMakerApi | None = None
        self._quantum_tasks: QuantumTasks | None = None

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
        context = JobContext(
            endpoint_url=self.url,
            clients=AwsClients(self.url, internal_token=self._internal_token),
            launcher=self.launcher,
            timing=self.timing,
            hooks=self.job_faults,
        )
        self._registry = JobRegistry(self.root)
        self._braket = BraketApi(self._registry, context)
        self._sagemaker = SageMakerApi(self._registry, context)
        self._quantum_tasks = QuantumTasks(self._job_for_token)
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

    def interrupt(self, job_name: str) -> dict[str, Any]:
        """A spot interruption of a running managed spot training job: its processes are killed,
        it reports ``Interrupted``, then starts again (checkpoints downloaded again) and runs to its end.

        Raises:
            KeyError: no job has that name.
            RuntimeError: the job is not a managed spot job, or has no running process.
        """
        jobs = self._registry.by_name(job_name) if self._registry else []
        if not jobs:
            raise KeyError(job_name)
        for job in jobs:
            if job.interrupt():
                return job.admin_view()
        raise RuntimeError(f"job {job_name} is not a running managed spot training job (EnableManagedSpotTraining)")

    def usage(self) -> dict[str, Any]:
        """What clients asked and what the jobs cost, in AWS seconds.

        ``{"profile", "time_scale", "requests": {"<service>.<Operation>": {requests, throttled,
        peak_per_second}}, "jobs": [JobRun.usage()...]}``.
        """
        return {
            "profile": self.profile.name if self.profile else "none",
            "time_scale": self.timing.time_scale,
            "requests": self.usage_record.to_json(),
            "jobs": [job.usage() for job in (self._registry.all() if self._registry else [])],
        }

    def quantum_tasks(self) -> list[dict[str, Any]]:
        """Every quantum task created: ``quantumTaskArn``, ``jobToken``, ``jobArn``, ``deviceArn``, ``shots``, ``action``."""
        return self._quantum_tasks.recorded() if self._quantum_tasks else []

    def _job_for_token(self, token: str) -> str | None:
        for job in self._registry.all("braket") if self._registry else []:
            if getattr(job, "job_token", None) == token:
                return job.arn
        return None

    def tamper(self, job_name: str, action: "str | JobFault", **options: Any) -> list[dict[str, Any]]:
        """Arm a job fault: ``delete-input``, or ``delete``/``truncate``/``flip-byte``/``replace`` of its result.

        Example: ``emulator.tamper(name, "flip-byte", member="result.byoc")`` before or while the
        job runs. See :class:`~byoc_executor.local.faults.JobFault` for the options.

        Returns:
            Every fault armed for that job so far.

        Raises:
            ValueError: an unknown action or a malformed option.
            faults.TooLate: the job is already past the point where the fault applies.
        """
        fault = action if isinstance(action, JobFault) else JobFault(action, **options)
        return self.job_faults.arm(job_name, fault)

    def fault_report(self) -> dict[str, Any]:
        """``{"plan": FaultPlan.to_json() or None, "jobs": JobFaults.report()}``."""
        plan = self.faults
        return {"plan": plan.to_json() if plan is not None else None, "jobs": self.job_faults.report()}

    def clear_faults(self) -> dict[str, Any]:
        """Remove the fault plan and disarm every job fault; returns the report from just before."""
        report = self.fault_report()
        self.faults = None
        self.job_faults.clear()
        return report

    def _admin(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if method == "GET" and parts == ["_byoc", "jobs"]:
            return _json_response(200, self.jobs())
        if parts == ["_byoc", "usage"] and method in ("GET", "DELETE"):
            report = self.usage()
            if method == "DELETE":
                self.usage_record.clear()
            return _json_response(200, report)
        if method == "GET" and parts == ["_byoc", "quantum-tasks"]:
            return _json_response(200, self.quantum_tasks())
        if parts == ["_byoc", "faults"] and method in ("GET", "POST", "DELETE"):
            if method == "GET":
                return _json_response(200, self.fault_report())
            if method == "DELETE":
                return _json_response(200, self.clear_faults())
            try:
                self.faults = FaultPlan.from_json(_admin_json(request))
            except ValueError as e:
                return _json_response(400, {"message": f"bad fault plan: {e}"})
            return _json_response(200, self.fault_report())
        if method == "POST" and len(parts) == 4 and parts[:2] == ["_byoc", "jobs"] and parts[3] in ("kill", "interrupt"):
            try:
                return _json_response(200, self.kill(parts[2]) if parts[3] == "kill" else self.interrupt(parts[2]))
            except KeyError:
                return _json_response(404, {"message": f"no job named {parts[2]}"})
            except RuntimeError as e:
                return _json_response(409, {"message": str(e)})
        if method == "POST" and len(parts) == 4 and parts[:2] == ["_byoc", "jobs"] and parts[3] == "tamper":
            try:
                fault = JobFault.from_json(_admin_json(request))
                return _json_response(200, {"name": parts[2], "armed": self.tamper(parts[2], fault)})
            except ValueError as e:
                return _json_response(400, {"message": f"bad job fault: {e}"})
            except TooLate as e:
                return _json_response(409, {"message": str(e)})
        return _json_response(404, {"message": f"no admin route {method} {request.path}"})

    # --- WSGI ----------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        # The server line is the HTTP server's to write; moto adds its own "server" header, and a
        # response with two is refused by strict HTTP parsers (aiohttp's pure-Python one).
        def start_response_once(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [(k, v) for k, v in headers if k.lower() != "server"], exc_info)

        return self._dispatch(environ, start_response_once)

    def _dispatch(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        if request.path.startswith("/_byoc/"):
            return self._admin(request)(environ, start_response)
        service, _ = credential_scope(request)
        # Every answer to a client: a request id, and an error a botocore parser can read (wire.py).
        return wire.conform(self._answer, service)(environ, start_response)

    def _answer(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        service, region = credential_scope(request)
        if service is not None and not self._is_internal(request):
            call = ApiCall(service, operation_name(service, request), region, request)
            answer = self._hooked(call)
            plan = self.faults
            fault = plan.decide(call.service, call.operation) if answer is None and plan is not None else None
            if fault is not None:
                if fault.mode == AFTER:
                    # Serve the request for real, then lose its answer.
                    _discard(self._route(request, service, region), environ)
                answer = fault.response(request)
            if answer is not None:
                return answer(environ, start_response)
        return self._route(request, service, region)(environ, start_response)

    def _is_internal(self, request: Request) -> bool:
        """Whether the request comes from the emulator's own clients (``staging.AwsClients``)."""
        sent = request.headers.get(INTERNAL_HEADER, "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(sent, self._internal_token.encode())

    def _route(self, request: Request, service: str | None, region: str) -> Callable:
        """The WSGI application that answers the request (the job APIs' answers are computed here)."""
        if service == "braket":
            return self._braket_call(request, region)
        target = request.headers.get("X-Amz-Target", "").split(".")[-1]
        if service == "sagemaker" and target in SAGEMAKER_OPERATIONS:
            return self._sagemaker_call(request, region)
        if service == "sagemaker" and target == "ListTags":
            return self._sagemaker_list_tags(request, region)
        return self._moto

    def _sagemaker_list_tags(self, request: Request, region: str) -> Callable:
        """ListTags of a training job's ARN; any other ARN's goes to moto."""
        data = request.get_data(cache=True)
        request.environ["wsgi.input"] = io.BytesIO(data)  # moto reads the body again
        assert self._sagemaker is not None
        try:
            answer = self._sagemaker.list_tags(_json_body(request), region)
        except ValidationError as e:
            return _sagemaker_error(ApiError("ValidationException", e.message))
        except ApiError as e:
            return _sagemaker_error(e)
        if answer is None:
            return self._moto
        return Response(json.dumps(answer), status=200, content_type="application/x-amz-json-1.1")

    def _hooked(self, call: ApiCall) -> Response | None:
        for hook in self.request_hooks:
            answer = hook(call)
            if answer is not None:
                return answer
        return None

    def _braket_call(self, request: Request, region: str) -> Response:
        assert self._braket is not None and self._quantum_tasks is not None
        return braket_routes.answer(request, region, self._braket, self._quantum_tasks)

    def _sagemaker_call(self, request: Request, region: str) -> Response:
        operation = request.headers["X-Amz-Target"].split(".")[-1]
        api = self._sagemaker
        assert api is not None
        try:
            body = _json_body(request)
            if operation == "CreateTrainingJob":
                answer = api.create_training_job(region, body)
            elif operation == "DescribeTrainingJob":
                answer = api.describe_training_job(body, region)
            elif operation == "StopTrainingJob":
                answer = api.stop_training_job(body, region)
            else:
                answer = api.list_training_jobs(body, region)
        except ValidationError as e:
            return _sagemaker_error(ApiError("ValidationException", e.message))
        except ApiError as e:
            return _sagemaker_error(e)
        return Response(json.dumps(answer), status=200, content_type="application/x-amz-json-1.1")


def _discard(app: Callable, environ: dict) -> None:
    """Run a WSGI application to the end and throw its answer away."""
    iterable = app(environ, lambda status, headers, exc_info=None: (lambda data: None))
    try:
        for _ in iterable:
            pass
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()


def _admin_json(request: Request) -> Any:
    raw = request.get_data()
    try:
        return json.loads(raw) if raw else None
    except ValueError as e:
        raise ValueError(f"the body is not JSON: {e}") from e




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
