"""byoc-executor: run Covalent electrons as Amazon Braket hybrid jobs or SageMaker training jobs.

Covalent is imported before the plugin module on purpose: importing Covalent loads every
installed executor plugin, this one included, and a plugin module that is itself mid-import at
that moment would be skipped by Covalent's loader.
"""

import covalent  # noqa: F401  (see above: registers the plugin with a fully imported module)

from byoc_executor.byoc import BYOCExecutor

__all__ = ["BYOCExecutor"]
__version__ = "0.1.0"
