"""Local mode: an emulator of the Braket and SageMaker job APIs, with moto underneath.

``Emulator`` serves one loopback endpoint that plain boto3/aiobotocore clients use through
``endpoint_url=``; each job runs the container entry script as a local process. See
``server.py`` for routing, ``jobs.py`` for a job's life, ``launchers.py`` for how it starts.
"""

from byoc_executor.local.server import Emulator

__all__ = ["Emulator"]
