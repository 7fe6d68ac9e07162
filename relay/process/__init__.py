"""The process around a node: logs, pidfile, systemd, the event loop, limits, periodic work.

- ``logs``: log files, levels, reopening rotated files;
- ``pidfile``: the pidfile, held while the node runs;
- ``systemd``: sd_notify (READY, RELOADING, WATCHDOG, STOPPING);
- ``loop``: the event loop (uvloop where available), chosen in one place;
- ``open_files``: the open-files limit raised to the hard one, checked against the cap;
- ``binding``: a listener's addresses resolved and bound, a failed bind in words;
- ``periodic``: background work every N seconds, a failing round logged;
- ``collector``: start-up's objects frozen out of the cyclic garbage collector.
"""
