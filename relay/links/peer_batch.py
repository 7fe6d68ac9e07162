"""The batch format relay nodes speak between themselves: many messages per POST.

A link starts in Aphlict's format, one ``POST /`` per message, and switches to
``POST /peer/batch`` only once a receipt from the peer carried the
``X-Relay-Peer`` header naming ``batch/1``. Aphlict never sends that header,
so an Aphlict peer keeps getting exactly one Aphlict-format POST per message.

A batch body is a JSON array of records::

    {"instance": "default", "covered": ["<fingerprint>", ...], "message": {...}}

``message`` is the notification as the sender stamped it (``touched`` ends
with the sender's fingerprint). ``covered`` names the nodes that already have
the message or that the sender is sending it to itself; the receiver forwards
it only to peers outside ``touched`` and ``covered``. That is what makes a
post cost N-1 transfers in a healthy relay mesh, while a node the sender
cannot reach (its link is down, so it is not in ``covered``) is still reached
through the others.

A record may also say ``"resent": true``: the sender had named a node in
``covered`` that it then could not reach, and sends the message again for
the receiver to pass on to it, whether or not the receiver has it already
(``relay.links.detour``). A node that does not know the field drops such a
copy as a duplicate, as before.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from relay.core.instances import check_instance
from relay.core.notification import Notification, check_notification
from relay.errors import NotificationError

#: Where a relay node takes batches.
BATCH_PATH = "/peer/batch"
#: The receipt header by which a relay node says which peer formats it takes.
CAPABILITY_HEADER = "X-Relay-Peer"
#: This version of the batch format.
BATCH_CAPABILITY = "batch/1"
#: Most messages one batch may carry (the receiver refuses more).
MAX_BATCH_MESSAGES = 1024
#: A sender closes a batch once it holds this many bytes, well under any
#: sensible admin body limit (the limit's floor is 1 KiB, its default 1 MiB).
BATCH_BYTES = 128 * 1024
#: Messages larger than this go alone in Aphlict's format rather than in a batch.
SOLO_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One checked message of a received batch."""

    instance: str
    notification: Notification
    covered: frozenset[str]
    #: The sender asks for it to be passed on even if this node has it already.
    resent: bool = False


def encode_covered(covered: Iterable[str]) -> bytes:
    """``covered`` as the JSON list a record carries (sorted, so equal sets encode alike)."""
    return orjson.dumps(sorted(covered))


def encode_record(
    instance: str, covered: bytes, payload: memoryview | bytes, *, resent: bool = False
) -> bytes:
    """One record of a batch; ``covered`` from ``encode_covered``, ``payload`` stamped JSON.

    ``resent``: the message is sent again, to be passed on to the nodes outside ``covered``.
    """
    return b"".join(
        (
            b'{"instance":',
            orjson.dumps(instance),
            b',"covered":',
            covered,
            b',"resent":true' if resent else b"",
            b',"message":',
            payload,
            b"}",
        )
    )


def encode_batch(records: Sequence[bytes]) -> bytes:
    """The POST body carrying ``records``."""
    return b"[" + b",".join(records) + b"]"


def decode_batch(
    raw: bytes, *, max_subscribers: int = 10_000, max_touched: int = 64
) -> list[BatchItem]:
    """Decode and check a batch body; every record must be usable or none is taken.

    Raises:
        NotificationError: naming the record at fault, fit for the HTTP 400 response.
    """
    try:
        records = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotificationError(f"the batch is not valid JSON: {exc.msg}") from None
    if not isinstance(records, list):
        raise NotificationError("a batch must be a JSON array")
    if len(records) > MAX_BATCH_MESSAGES:
        raise NotificationError(
            f"the batch holds {len(records)} messages; the limit is {MAX_BATCH_MESSAGES}"
        )
    items = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise NotificationError(f"batch record {index} must be a JSON object")
        instance = record.get("instance")
        covered = record.get("covered", [])
        if not isinstance(instance, str) or not instance:
            raise NotificationError(f'batch record {index}: "instance" must be a non-empty string')
        if not isinstance(covered, list) or not all(isinstance(fp, str) for fp in covered):
            raise NotificationError(f'batch record {index}: "covered" must be a list of strings')
        resent = record.get("resent", False)
        if not isinstance(resent, bool):
            raise NotificationError(f'batch record {index}: "resent" must be true or false')
        if len(covered) > max_touched:
            raise NotificationError(
                f'batch record {index}: "covered" lists {len(covered)} nodes; '
                f"the limit is {max_touched}"
            )
        try:
            check_instance(instance)
            notification = check_notification(
                record.get("message"), max_subscribers=max_subscribers, max_touched=max_touched
            )
        except NotificationError as exc:
            raise NotificationError(f"batch record {index}: {exc}") from None
        items.append(BatchItem(instance, notification, frozenset(covered), resent))
    return items
