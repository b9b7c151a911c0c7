"""Recognising Covalent's helper nodes from the lattice Covalent itself builds (pure logic, no server)."""

from __future__ import annotations

import covalent as ct
import pytest
from covalent._workflow.transportable_object import TransportableObject

from byoc_executor import helper_nodes


@ct.electron
def pair(x):
    return (x, x + 1)


@ct.electron
def total(values):
    return sum(values)


def _auto_list_node(*args):  # the user's own function with the name of Covalent's list helper
    return list(args)


def impostor(e, key):
    return e[key]


impostor.__name__ = ":pair.__getitem__"  # the name of a helper, the code of a user


@ct.lattice
def workflow(x):
    a, b = pair(x)
    c = pair(x)[0]
    d = pair(x).real
    return total([a, b, c, d]), total({"a": a}), ct.electron(_auto_list_node)(a), ct.electron(impostor)(pair(x), 0)


@pytest.fixture(scope="module")
def graph() -> dict[str, list]:
    """Node name -> the kinds helper_kind gives that name's nodes' functions."""
    workflow.build_graph(1)
    tg = workflow.transport_graph
    kinds: dict[str, list] = {}
    for node in tg._graph.nodes:
        kinds.setdefault(tg.get_node_value(node, "name"), []).append(helper_nodes.helper_kind(tg.get_node_value(node, "function")))
    return kinds


def test_covalent_helpers_are_recognised(graph: dict[str, list]) -> None:
    assert graph[":pair()[0]"] == graph[":pair()[1]"] == ["getitem"]
    assert set(graph[":pair.__getitem__"]) == {"getitem", None}  # Covalent's, and the impostor's
    assert graph[":pair.__getattr__"] == ["getattr"]
    assert set(graph[":electron_list:"]) == {"list"}
    assert graph[":electron_dict:"] == ["dict"]


def test_user_functions_are_not_helpers_whatever_their_names(graph: dict[str, list]) -> None:
    assert graph["pair"] == [None] * 4
    assert graph["total"] == [None, None]
    assert graph["_auto_list_node"] == [None]
    # Covalent's postprocessing node mentions every helper in its code, but is none of them.
    assert all(k is None for name, ks in graph.items() if name.startswith(":postprocess:") for k in ks)


def test_a_helper_runs_over_its_inputs_as_covalents_wrapper_would(graph: dict[str, list]) -> None:
    tg = workflow.transport_graph
    getitem = next(tg.get_node_value(n, "function") for n in tg._graph.nodes if tg.get_node_value(n, "name") == ":pair()[1]")
    out = helper_nodes.run_helper(getitem, [TransportableObject((5, 6)), TransportableObject(1)], {})
    assert isinstance(out, TransportableObject) and out.get_deserialized() == 6
    with pytest.raises(IndexError):
        helper_nodes.run_helper(getitem, [TransportableObject((5, 6)), TransportableObject(7)], {})
