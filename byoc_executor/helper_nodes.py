"""Covalent's helper nodes: recognised, and run in the Covalent server instead of as AWS jobs.

Covalent 0.240 turns some lattice expressions into nodes of their own, each with the executor of
the electron they come from (``covalent/_workflow/electron.py``):

=================  ===========================================  ================================
expression         node name                                    function (defined in Electron)
=================  ===========================================  ================================
``x[0]``           ``:<fn>.__getitem__``                        ``__getitem__.<locals>.get_item``
``a, b = x``       ``:<fn>()[0]``, ``:<fn>()[1]``                 ``__iter__.<locals>.get_item``
``x.attr``         ``:<fn>.__getattr__``                        ``__getattr__.<locals>.get_attr``
``f([a, b])``      ``:electron_list:``                          ``connect_node_with_others.<locals>._auto_list_node``
``f({"k": a})``    ``:electron_dict:``                          ``connect_node_with_others.<locals>._auto_dict_node``
=================  ===========================================  ================================

Left alone, each is an AWS job: minutes of start-up and a bill for ``e[key]``. They are Covalent's
own code over values the server already holds, so they run here, in a worker thread, in
milliseconds. A node is a helper only if its function's name has the helper's form AND its
serialized code is that helper's, defined in ``covalent._workflow.electron`` (its qualified name is
in the pickle): a user function that merely has an unusual name is a job like any other. This is
decided from the function's serialized form, without unpickling it; only a recognised helper is
unpickled, and it runs without the parent's hooks (``call_before``/``call_after``, ``DepsPip``:
they prepare the job's environment and have no business in the server).

The values a helper reads (its parent's output) are unpickled here: their types must be
importable in the Covalent server. Where they are not, the helper runs as a job after all.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from covalent._workflow.transportable_object import TransportableObject

COVALENT_MODULE = b"covalent._workflow.electron"

# kind -> (a test of the function's name, the qualified names its code may have)
_HELPERS: dict[str, tuple[Any, tuple[bytes, ...]]] = {
    "getitem": (
        lambda name: name.startswith(":") and (name.endswith(".__getitem__") or re.search(r"\[\d+\]$", name) is not None),
        (b"Electron.__getitem__.<locals>.get_item", b"Electron.__iter__.<locals>.get_item"),
    ),
    "getattr": (lambda name: name.startswith(":") and name.endswith(".__getattr__"), (b"Electron.__getattr__.<locals>.get_attr",)),
    "list": (lambda name: name == "_auto_list_node", (b"Electron.connect_node_with_others.<locals>._auto_list_node",)),
    "dict": (lambda name: name == "_auto_dict_node", (b"Electron.connect_node_with_others.<locals>._auto_dict_node",)),
}


class HelperUnavailable(Exception):
    """A helper cannot run here (its inputs' types are not importable in the server): run it as a job."""


def helper_kind(function: TransportableObject) -> str | None:
    """Which of Covalent's helpers ``function`` is ("getitem", "getattr", "list", "dict"), or None."""
    try:
        name = str(function.attrs.get("name") or "")
        pickled = base64.b64decode(function.get_serialized())
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if COVALENT_MODULE not in pickled:
        return None
    for kind, (name_test, qualnames) in _HELPERS.items():
        if name_test(name) and any(q in pickled for q in qualnames):
            return kind
    return None


def wrapped_helper_kind(function: Any) -> str | None:
    """``helper_kind`` of what Covalent hands ``run()``: ``partial(wrapper_fn, TransportableObject, ...)``."""
    inner = getattr(function, "args", ())
    return helper_kind(inner[0]) if inner and isinstance(inner[0], TransportableObject) else None


def run_helper(function: TransportableObject, args: list[TransportableObject], kwargs: dict[str, TransportableObject]) -> TransportableObject:
    """Run a recognised helper over its (serialized) inputs; its output, as Covalent's wrapper returns it.

    Raises:
        HelperUnavailable: an input cannot be unpickled here.
        Exception: whatever the helper raises (e.g. an IndexError of ``x[5]``): the node's error.
    """
    try:
        values = [a.get_deserialized() for a in args]
        kwvalues = {k: v.get_deserialized() for k, v in kwargs.items()}
    except (ImportError, AttributeError) as e:  # a type the server cannot import
        raise HelperUnavailable(f"{type(e).__name__}: {e}") from e
    helper = function.get_deserialized()
    return TransportableObject(helper(*values, **kwvalues))
