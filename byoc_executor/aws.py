"""Long-lived aiobotocore clients, shared by every task of one AWS configuration.

One session and one client per (service, region, profile, credentials file, endpoint) and event
loop, created lazily under a lock and closed by ``close_clients()``. Retries live here and only
here: botocore's "standard" retry mode with a bounded number of attempts (throttling and 5xx are
retried with backoff by botocore itself); nothing in this package loops around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiobotocore import __version__ as aiobotocore_version
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import DataNotFoundError
from botocore.utils import parse_timestamp

from byoc_executor import __version__
from byoc_executor.errors import ConfigurationError, CredentialsError
from byoc_executor.settings import Settings

# Dummy keys for a loopback endpoint when nothing else is configured: the emulator accepts any.
LOCAL_ACCESS_KEY = "byoc-local"
LOCAL_SECRET_KEY = "byoc-local-secret"
LOCAL_DEFAULT_REGION = "us-east-1"

RETRY_ATTEMPTS = 8
LOGS_RETRY_ATTEMPTS = 2


@dataclass(frozen=True)
class AWSTarget:
    """The part of the settings that decides which client to use."""

    region: str
    profile: str
    credentials_file: str
    endpoint_url: str
    local: bool

    @classmethod
    def of(cls, settings: Settings) -> AWSTarget:
        return cls(settings.region, settings.profile, settings.credentials_file, settings.endpoint_url, settings.is_local_endpoint)


USER_AGENT = (
    f"byoc-executor/{__version__} aiobotocore/{aiobotocore_version} "
    f"Python/{platform.python_version()} {platform.system()}/{platform.release()}"
)
"""The User-Agent of every request (botocore appends its own name and version).

It names this package, so that CloudTrail tells its calls apart. It is also fixed: without it,
botocore rebuilds its User-Agent (OS, feature ids, config metadata) twice for every request, which
was about 15% of the client's CPU per request here (bench/executor.py).
"""


def parse_aws_timestamp(value: Any) -> datetime:
    """A timestamp in an AWS answer, as an aware datetime: ISO 8601 and epoch seconds directly.

    botocore's default parser tries dateutil for every value (a DescribeTrainingJob answer has a
    dozen); this one takes the two forms the job APIs use and hands anything else to botocore's.
    """
    try:
        if isinstance(value, (int, float)) or (isinstance(value, str) and value.replace(".", "", 1).isdigit()):
            return datetime.fromtimestamp(float(value), timezone.utc)  # epoch seconds, as botocore reads digits
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError, OverflowError, OSError):
        parsed = parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _client_config(service: str, target: AWSTarget) -> AioConfig:
    s3: dict[str, Any] = {"addressing_style": "path"} if target.endpoint_url else {}
    if target.local:
        # Over https (AWS itself) botocore sends S3 bodies unsigned, with a CRC32 checksum; over
        # plain http it would SHA-256 every body on the event loop. Loopback gets AWS's behaviour.
        s3["payload_signing_enabled"] = False
    # Reading a job's logs is a convenience that shares the polling loop: a throttled Logs API
    # must not hold up status polling for a minute of backoff. What is missed is read next poll.
    attempts = LOGS_RETRY_ATTEMPTS if service == "logs" else RETRY_ATTEMPTS
    return AioConfig(
        user_agent=USER_AGENT,
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=64,
        s3=s3 or None,
    )


class ClientPool:
    """The clients of one event loop."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()
        self._sessions: dict[AWSTarget, tuple[AioSession, str, dict[str, str]]] = {}
        self._clients: dict[tuple[str, AWSTarget], Any] = {}

    async def _session(self, target: AWSTarget) -> tuple[AioSession, str, dict[str, str]]:
        if target in self._sessions:
            return self._sessions[target]
        session = AioSession(profile=target.profile or None)
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_aws_timestamp)
        if target.credentials_file:
            session.set_config_variable("credentials_file", target.credentials_file)
        resolver = session.get_component("credential_provider")
        if target.local:
            # A loopback endpoint never wants instance or container credentials, and asking the
            # metadata service from a machine that has none costs seconds per call.
            for provider in ("iam-role", "container-role"):
                with contextlib.suppress(ValueError):
                    resolver.remove(provider)
        credentials = await session.get_credentials()
        keys: dict[str, str] = {}
        if credentials is None:
            if not target.local:
                raise CredentialsError(
                    "no AWS credentials found: configure a profile (aws configure), set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass profile=/credentials_file= "
                    "to the executor"
                )
            keys = {"aws_access_key_id": LOCAL_ACCESS_KEY, "aws_secret_access_key": LOCAL_SECRET_KEY}
        region = target.region or session.get_config_variable("region") or ""
        if not region:
            if not target.local:
                raise ConfigurationError("region", "is not set and no profile names one", "pass region=... (e.g. us-east-1)")
            region = LOCAL_DEFAULT_REGION
        self._sessions[target] = (session, region, keys)
        return self._sessions[target]

    async def client(self, service: str, target: AWSTarget) -> Any:
        """The shared client of ``service`` ("s3", "braket", "sagemaker", "logs", "sts") for ``target``."""
        key = (service, target)
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._lock:
            if key not in self._clients:
                session, region, keys = await self._session(target)
                # Loading the service's models is tens of milliseconds of CPU: do it in a worker
                # thread (botocore's loader caches them), not on the event loop.
                await asyncio.to_thread(_load_models, session, service)
                _freeze_heap()
                creator = session.create_client(
                    service,
                    region_name=region,
                    endpoint_url=target.endpoint_url or None,
                    config=_client_config(service, target),
                    **keys,
                )
                self._clients[key] = await self._stack.enter_async_context(creator)
            return self._clients[key]

    async def region(self, target: AWSTarget) -> str:
        return (await self._session(target))[1]

    async def close(self) -> None:
        async with self._lock:
            self._clients.clear()
            self._sessions.clear()
            await self._stack.aclose()
            self._stack = contextlib.AsyncExitStack()


def _load_models(session: AioSession, service: str) -> None:
    import aiohttp.connector  # noqa: F401  (its import builds TLS contexts: ~40 ms, once)

    loader = session.get_component("data_loader")
    for kind in ("service-2", "endpoint-rule-set-1"):
        loader.load_service_model(service, kind)
    with contextlib.suppress(DataNotFoundError):
        # The first get_paginator() would read this on the loop (~8 ms for S3's).
        loader.load_service_model(service, "paginators-1")
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        with contextlib.suppress(DataNotFoundError):
            loader.load_data(name)


GC_FREEZE_VARIABLE = "BYOC_GC_FREEZE"
_heap_frozen = False


def _freeze_heap() -> None:
    """Take what the process holds now out of the garbage collector's full passes (once).

    The process running the executor is the Covalent server: its imports (Covalent, FastAPI,
    SQLAlchemy, dask) and the service models botocore has just loaded are over 100,000 long-lived
    objects that every full collection walks, pausing the event loop - and so every task - for
    ~100-250 ms each time (bench/executor.py). ``gc.freeze()`` moves them to a permanent
    generation, as the Python docs suggest for long-lived servers: later full collections walk
    only what was allocated since. The price: garbage cycles among those objects are never
    reclaimed (reference counting still frees the rest). ``BYOC_GC_FREEZE=0`` (or false, no, off)
    turns this off.
    """
    global _heap_frozen
    if _heap_frozen or os.environ.get(GC_FREEZE_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    _heap_frozen = True
    gc.freeze()


_pools: dict[asyncio.AbstractEventLoop, ClientPool] = {}


def pool() -> ClientPool:
    """The client pool of the running event loop."""
    loop = asyncio.get_running_loop()
    for stale in [other for other in _pools if other.is_closed()]:
        del _pools[stale]
    if loop not in _pools:
        _pools[loop] = ClientPool()
    return _pools[loop]


async def close_clients() -> None:
    """Close every client of the running loop (tests and scripts; the server keeps them open)."""
    loop = asyncio.get_running_loop()
    if loop in _pools:
        await _pools.pop(loop).close()
