"""The process around a node: logs, pidfile, systemd, the event loop, periodic work.

- ``logs``: log files, levels, reopening rotated files;
- ``pidfile``: the pidfile, held while the node runs;
- ``systemd``: sd_notify (READY, RELOADING, WATCHDOG, STOPPING);
- ``loop``: the event loop (uvloop where available), chosen in one place;
- ``periodic``: background work every N seconds, a failing round logged.
"""
