"""Source addresses for load-generated browsers, and which browser an own-key post is for."""

from __future__ import annotations

import pytest

from bench.sources import owner_of, plan, source_for, split


def test_split_is_near_equal_and_whole() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert sum(split(100_000, 6)) == 100_000


def test_100k_over_6_generators_uses_2_addresses_each_under_the_cap() -> None:
    shares = plan(100_000, 6, per_address=10_000)
    assert [s.count for s in shares] == [16_667] * 4 + [16_666] * 2
    assert [s.first for s in shares][:2] == [0, 16_667]
    assert all(len(s.sources) == 2 for s in shares)
    addresses = [a for s in shares for a in s.sources]
    # Every generator has addresses of its own, consecutive from 127.0.0.2.
    assert addresses == [f"127.0.0.{i}" for i in range(2, 14)]


def test_each_address_carries_at_most_per_address_browsers() -> None:
    for share in plan(100_000, 6, per_address=10_000):
        used: dict[str, int] = {}
        for offset in range(share.count):
            address = source_for(offset, share.count, share.sources)
            used[address] = used.get(address, 0) + 1
        assert set(used) == set(share.sources)
        assert max(used.values()) <= 10_000


def test_fewer_browsers_than_generators() -> None:
    shares = plan(3, 6)
    assert [(s.first, s.count, s.sources) for s in shares] == [
        (0, 1, ("127.0.0.2",)),
        (1, 1, ("127.0.0.3",)),
        (2, 1, ("127.0.0.4",)),
    ]


def test_addresses_beyond_loopback_are_refused() -> None:
    with pytest.raises(ValueError, match="beyond 127/8"):
        plan(10, 1, per_address=1, first_address="127.255.255.250")
    with pytest.raises(ValueError, match="positive"):
        plan(0, 6)


def test_own_key_posts_reach_every_browser_once_before_repeating() -> None:
    browsers = 1000
    owners = [owner_of(seq, 30, 7919, browsers) for seq in range(30, 30 + browsers)]
    assert sorted(owners) == list(range(browsers))
    assert owner_of(30, 30, 7919, browsers) == 0
