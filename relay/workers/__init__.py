"""Workers: one relay node served by several processes on one machine.

``relay serve --workers N`` starts a supervisor (``supervisor.py``) that
reserves the node's ports (``ports.py``), spawns N ``relay serve`` worker
processes that all listen on those ports with ``SO_REUSEPORT``, restarts a
worker that dies and speaks for the node to systemd. Each worker is an
ordinary node that also answers its siblings on a private unix socket
(``siblings.py``), so whichever worker answers ``/status/`` or ``/metrics``
reports the whole node (``relay.core.add_up`` adds their readings up).
Workers meet through the broker: a post that reaches one worker reaches the
browsers of all of them.
"""
