"""Running a node: observability and the process around it.

- ``metrics``: the Prometheus collector over relay's own counters;
- ``dashboard`` and ``static/dashboard.html``: the live status page;
- ``node_status``: the node-status message that feeds it;
- ``logs``: log files, levels and reopening on SIGHUP/SIGUSR1;
- ``systemd``: sd_notify (READY, RELOADING, WATCHDOG, STOPPING);
- ``pidfile``: the pidfile, held while the node runs;
- ``loop``: the event loop (uvloop where available).
"""
