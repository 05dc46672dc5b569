"""The client's endpoint rotation: each kind of request rotates on its own, fresh rotations start anywhere,
and an endpoint set aside is skipped until its cool-down ends."""

from __future__ import annotations

from mmembed.client._endpoints import Endpoints


def test_each_kind_of_request_rotates_over_every_endpoint_on_its_own() -> None:
    endpoints = Endpoints(["a", "b", "c"], ["A", "B", "C"])
    picks = []
    for _ in range(6):  # images and texts alternate; each still visits every endpoint in turn
        picks.append(("image", endpoints.pick("image")[1]))
        picks.append(("text", endpoints.pick("text")[1]))
    for kind in ("image", "text"):
        mine = [client for k, client in picks if k == kind]
        assert sorted(mine[:3]) == ["A", "B", "C"] and mine[3:] == mine[:3]


def test_fresh_clients_do_not_all_start_on_the_first_endpoint() -> None:
    firsts = {Endpoints(["a", "b"], ["A", "B"]).pick("image")[1] for _ in range(64)}
    assert firsts == {"A", "B"}  # fails with probability 2**-63


def test_an_endpoint_set_aside_is_skipped_and_the_others_serve() -> None:
    endpoints = Endpoints(["a", "b"], ["A", "B"])
    index, _ = endpoints.pick("image")
    assert endpoints.set_aside(index)  # the other one is healthy
    assert {endpoints.pick("image")[0] for _ in range(4)} == {1 - index}
    endpoints.healthy(index)
    assert {endpoints.pick("image")[0] for _ in range(4)} == {0, 1}
