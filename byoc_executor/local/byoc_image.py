"""The byoc-executor job image, run as a local process: process mode's stand-in for the image.

In process mode (no ``--image``) there is no container: the emulator runs what the byoc image
would run, ``python byoc_entry.py train``, with the job's ``/opt/ml`` tree moved by
``SAGEMAKER_BASE_DIR``. This module is that image: it is the one module of ``byoc_executor.local``
that knows the image's own contract (which jobs it can run), and it learns it from the entry
script itself. The emulator's service modules never import it; they ask a launcher through
:meth:`ByocImageLauncher.refusal` (``tests/test_contract.py`` checks both).
"""

from __future__ import annotations

import functools
import importlib.util
import sys

from byoc_executor.local.launchers import ProcessLauncher

_ENTRY_MODULE = "byoc_executor.container.byoc_entry"


@functools.lru_cache(maxsize=None)
def entry_script() -> str:
    """The path of the image's entry script (found, not imported)."""
    spec = importlib.util.find_spec(_ENTRY_MODULE)
    if spec is None or not spec.origin:
        raise OSError(f"the byoc-executor entry script ({_ENTRY_MODULE}) is not installed")
    return spec.origin


def _entry_contract() -> tuple[str, str]:
    """(the Braket entry point, the protocol hyperparameter's name), from the entry script."""
    from byoc_executor.container import byoc_entry  # the image's own contract: this module is the image

    return byoc_entry.BRAKET_ENTRY_POINT, byoc_entry.HP_PROTOCOL


class ByocImageLauncher(ProcessLauncher):
    """Runs jobs of the byoc-executor image as processes; refuses jobs of other images at creation."""

    @property
    def train_command(self) -> list[str]:
        """``python byoc_entry.py train``: the image's ``train``."""
        return [sys.executable, entry_script(), "train"]

    def refusal(self, service: str, request: dict) -> str | None:
        """Why this image cannot run the job (None: it can)."""
        entry_point, protocol = _entry_contract()
        if service == "braket":
            spec = request.get("algorithmSpecification") or {}
            if (spec.get("scriptModeConfig") or {}).get("entryPoint") == entry_point and protocol in (request.get("hyperParameters") or {}):
                return None
        elif protocol in (request.get("HyperParameters") or {}):
            return None
        return "it is not a byoc-executor job, and no container image runs in process mode"
