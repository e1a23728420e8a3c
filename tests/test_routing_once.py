"""One update of a ready optimizer routes the parameters once and checks the gradients
against them once, however many blocks read the routing (counted at trace time)."""

import collections

import jax
import jax.numpy as jnp
import pytest

import optorth
from optorth.blocks import _compute_dtype
from optorth.matrices import _routing
from optorth.matrices._resolve import RoutingOnce
from optorth.optimizers import _assemble

PARAMS = {"embed": jnp.ones((16, 8)), "h1": {"kernel": jnp.ones((8, 32))},
          "h2": {"kernel": jnp.ones((32, 8))}, "b": jnp.zeros(8),
          "steps": jnp.zeros((), jnp.int32)}  # an integer leaf: the partition sees a masked tree


@pytest.fixture
def calls(monkeypatch):
    """Counts calls of the routing decisions and of the updates-against-params check."""
    counter = collections.Counter()

    def counting(name, original):
        def wrapper(*args, **kwargs):
            counter[name] += 1
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(_routing, "routing_decisions",
                        counting("route", _routing.routing_decisions))
    check = counting("check", _compute_dtype.check_updates_match_params)
    monkeypatch.setattr(_compute_dtype, "check_updates_match_params", check)
    monkeypatch.setattr(_assemble, "check_updates_match_params", check)
    return counter


@pytest.mark.parametrize("name", ["muon", "root", "normuon", "signum"])
def test_one_update_routes_once_and_checks_once(calls, name):
    tx = getattr(optorth, name)()
    state = tx.init(PARAMS)
    calls.clear()
    jax.jit(tx.update).lower(PARAMS, state, PARAMS)
    # Before: muon routed 5 times per update (its init, traced again to check the state,
    # then the partition, Newton–Schulz and the shape scale each), root 6, normuon 8,
    # signum 3; the check ran twice (the guard, then the compute-dtype wrapper).
    assert calls == {"route": 1, "check": 1}


def test_outside_an_optimizer_the_shared_routing_routes_each_tree():
    routing = RoutingOnce()
    small = {"w": jnp.ones((4, 8))}
    assert routing(small) == optorth.route(small)
    with routing.once(PARAMS):
        assert routing(small) == routing(PARAMS) == optorth.route(PARAMS)
    assert routing(small) == optorth.route(small)
