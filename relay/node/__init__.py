"""One relay node: its parts wired together, and the process that serves it.

- ``node``: starts the parts and the listeners in order, stops them in reverse;
- ``parts``: the hub and what it routes through, built from the config;
- ``reload``: what a reload changes at once, and what waits for a restart;
- ``runtime``: signals, reloads and systemd around a serving node (or the
  supervisor of its workers).
"""
