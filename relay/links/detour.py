"""When a peer link goes down, what it held goes on through the peers still up, ahead of newer.

A node forwarding a message to its relay peers names in each record's
``covered`` the peers it sends the message to itself, so that the others do
not pass it on to them (``relay.links.peer_batch``). When the link to one of
them goes down, what that link still holds was promised to it by this node
alone, and nobody else will carry it; what this node forwards from then on
leaves the peer out of ``covered``, and the others carry it there. Those
later messages would reach the peer first, and the ones held back only once
its link is back: out of order.

So the moment a link goes down from up, each message it holds unanswered
(queued or in flight) is sent again, oldest first, to every relay peer that
is up and was sent it, marked ``resent``: such a peer passes it on to the
peer cut off although it has it already (``relay.core.hub``). This happens
in the same step as the failure that brought the link down, so in each of
those peers' queues the copies come before anything forwarded afterwards.
Every path into the peer cut off then carries this node's messages from the
first one it had not taken, in order, and the link itself keeps its own
queue for when the peer is back: the peer keeps the first copy of each
message to arrive, and whichever path brings a message has brought every
earlier one before it.

That holds while no queue on the way dropped messages (full, or older than
``queue_max_age_seconds``): a copy held back may then come by another path
late. A relay peer with too little room in its queue gets the oldest that
fit, rather than dropping messages it had queued already.

Pure: no I/O. It queues on the links it is given and says which it gave any.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.links.outbox import Outgoing
from relay.links.peer_batch import encode_covered, encode_record
from relay.links.peer_state import PeerLinkState, PeerState


def detour(
    held: Sequence[Outgoing], down: PeerLinkState, links: Sequence[PeerLinkState]
) -> dict[PeerLinkState, int]:
    """Queue ``held``, what ``down`` held when it went down, on the relay peers in ``links``.

    Returns each link given messages, with how many.
    """
    up = [
        link
        for link in links
        if link is not down and link.state is PeerState.UP and link.fingerprint is not None
    ]
    sending = frozenset(link.fingerprint for link in up if link.fingerprint is not None)
    relays = {link: link.outbox.room() for link in up if link.batching}
    given: dict[PeerLinkState, int] = {}
    for item in held:
        if item.covered is None:
            continue  # queued without saying who has it: nobody can be told whom to pass it to
        # The peers that were sent it: the ones that can pass it on.
        takers = [link for link in relays if link.fingerprint not in item.covered]
        if not takers:
            continue
        covered = item.covered | sending
        record = encode_record(item.instance, encode_covered(covered), item.payload, resent=True)
        size = len(item.payload) + len(record)
        for link in takers:
            slots, space = relays[link]
            if slots < 1 or size > space:
                relays[link] = (0, 0)  # what follows would leave a gap behind it
                continue
            relays[link] = (slots - 1, space - size)
            link.offer(item.instance, item.payload, record, covered)
            given[link] = given.get(link, 0) + 1
    return given
