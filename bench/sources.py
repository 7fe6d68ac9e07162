"""Which loopback source address each load-generated browser connects from.

Every TCP connection to the node needs a distinct (source address, source
port) pair. One source address has only the ephemeral range's ports (28,232
by default), and the kernel's search for a free port slows as that range
fills, so large runs spread their browsers over several loopback addresses
(127.0.0.2, 127.0.0.3, ...; all of 127/8 reaches the loopback interface),
each carrying at most ``per_address`` browsers. Pure: no socket is touched.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: Most browsers on one source address: keeps the kernel's free-port search short.
PER_ADDRESS = 10_000
#: The first source address used (127.0.0.1 is left to everything else).
FIRST_ADDRESS = "127.0.0.2"


@dataclass(frozen=True)
class Share:
    """One load generator's browsers: global indices ``first`` .. ``first + count - 1``."""

    first: int
    count: int
    #: Its source addresses, each used by an equal run of consecutive browsers.
    sources: tuple[str, ...]


def split(total: int, parts: int) -> list[int]:
    """``total`` divided into ``parts`` near-equal whole counts, the larger first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan(
    browsers: int,
    generators: int,
    per_address: int = PER_ADDRESS,
    first_address: str = FIRST_ADDRESS,
) -> list[Share]:
    """Split ``browsers`` over ``generators`` and give each share addresses of its own.

    A generator's addresses are never shared with another generator, so each
    process's port search only competes with itself.

    Raises:
        ValueError: a count is not positive, or the addresses would leave 127/8.
    """
    if browsers < 1 or generators < 1 or per_address < 1:
        raise ValueError("browsers, generators and per_address must be positive")
    address = ipaddress.IPv4Address(first_address)
    shares = []
    first = 0
    for count in split(browsers, min(generators, browsers)):
        needed = -(-count // per_address)
        sources = tuple(str(address + i) for i in range(needed))
        if ipaddress.IPv4Address(sources[-1]) not in ipaddress.IPv4Network("127.0.0.0/8"):
            raise ValueError(f"{browsers} browsers need source addresses beyond 127/8")
        address += needed
        shares.append(Share(first=first, count=count, sources=sources))
        first += count
    return shares


def source_for(offset: int, count: int, sources: tuple[str, ...]) -> str:
    """The address of the ``offset``-th of ``count`` browsers split evenly over ``sources``."""
    return sources[offset * len(sources) // count]


def owner_of(seq: int, base: int, stride: int, browsers: int) -> int:
    """The index of the one browser whose own key post ``seq`` goes to.

    Consecutive posts (numbered from ``base``) step ``stride`` browsers apart,
    so they reach browsers of every generator and every worker; a ``stride``
    coprime with ``browsers`` reaches each browser once before repeating.
    """
    return (seq - base) * stride % browsers
