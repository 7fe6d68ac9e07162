"""One relay node: its parts wired together, and the process that serves it.

- ``node``: builds the parts, starts the listeners in order, stops in reverse;
- ``runtime``: signals, reloads and systemd around a serving node (or the
  supervisor of its workers).
"""
