"""The routing core: how a message is parsed, routed and remembered, with no I/O.

- ``notification``: admin POST bodies -> notifications (parse, check, stamp);
- ``commands``: browser frames -> commands;
- ``instances``: the instance a browser's path or an admin query names;
- ``encoded``: a message encoded and framed once for all its recipients;
- ``subscriptions``: the (instance, key) -> connections index;
- ``history``: per-instance history bounded by count and age;
- ``dedup``: recently seen message identities, bounded;
- ``hub``: routing to history, local browsers and peers;
- ``instance_counts``: Aphlict's per-instance counters, in bounded memory;
- ``admission``: connection caps per node and per address;
- ``coalescer``: one write per browser per loop turn; a window only when busy;
- ``fingerprint``: the node's random identity;
- ``snapshot``: what a node knows at one moment, as one typed value.

Nothing here imports asyncio, aiohttp or a database driver, nor anything
above it (links, listeners, peering, broker, observe, node, cli); tests drive it without an
event loop.
"""
