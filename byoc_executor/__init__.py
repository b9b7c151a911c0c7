"""byoc-executor: run Covalent electrons as Amazon Braket hybrid jobs or SageMaker training jobs.

``BYOCExecutor`` is imported lazily, after Covalent: importing Covalent loads every installed
executor plugin (this one included), and Covalent's loader skips a plugin module that is itself
mid-import at that moment. Importing the package alone (e.g. for the emulator or the test harness)
therefore does not import Covalent, so a test can point Covalent at its own config first.
"""

from typing import Any

__all__ = ["BYOCExecutor"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "BYOCExecutor":
        import covalent  # noqa: F401  (loads the plugin module fully, see above)

        from byoc_executor.byoc import BYOCExecutor

        return BYOCExecutor
    raise AttributeError(f"module 'byoc_executor' has no attribute {name!r}")
