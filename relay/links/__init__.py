"""Node-to-node links, the pure part: what a peer link or the broker decides, no I/O.

- ``outbox``: messages waiting for a peer or for Redis: bounded, aged out;
- ``peer_state``: a peer link's decisions: what to send next, what an answer means;
- ``peer_batch``: the batch format between relay nodes (many messages per POST);
- ``overload``: the policy for posts while a peer link cannot keep up;
- ``backoff``: retry delays (``RetryDelays``, and ``Backoff`` with jitter);
- ``broker_wire``: Redis key names, the publish script, the frames on the wire.

The I/O that carries these out lives in ``relay.peering`` (aiohttp) and
``relay.broker`` (redis-py); nothing here imports asyncio or a network library.
"""
