"""The clock the executor's schedules count in: the event loop's, times ``BYOC_TIME_SCALE``.

On AWS the scale is 1 and this is ``loop.time()`` and ``asyncio.sleep``. A benchmark under the
emulator's AWS profile played N times faster (``byoc-executor local --profile aws --time-scale N``)
runs the executor with ``BYOC_TIME_SCALE=N``, so that its status polls, results watch, log reads
and deadlines keep AWS's proportions: a client that polls every 10 s against jobs that start in
3 s of wall time would otherwise look 60 times lazier than it is. Only the executor's own
schedules are scaled; botocore's retries and timeouts, and questions to Covalent, are not.
"""

from __future__ import annotations

import asyncio
import os

SCALE_ENV = "BYOC_TIME_SCALE"


def _scale() -> float:
    raw = os.environ.get(SCALE_ENV, "").strip()
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        raise ValueError(f"{SCALE_ENV} is {raw!r}: give a number above 0 (1, or the emulator's --time-scale)") from None
    if not value > 0:
        raise ValueError(f"{SCALE_ENV} is {raw!r}: give a number above 0 (1, or the emulator's --time-scale)")
    return value


SCALE = _scale()
"""AWS seconds per wall second (read once, at import)."""


def now() -> float:
    """The running loop's time, in (scaled) seconds."""
    return asyncio.get_running_loop().time() * SCALE


def wall(seconds: float) -> float:
    """Wall seconds for ``seconds`` of this clock."""
    return seconds / SCALE


async def sleep(seconds: float) -> None:
    """Sleep ``seconds`` of this clock."""
    await asyncio.sleep(seconds / SCALE)
