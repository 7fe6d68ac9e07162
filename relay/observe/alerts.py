"""Alerts sent to a webhook: the node's state looked at every second, episodes POSTed once.

``AlertSender`` reads the node's snapshot every ``interval_seconds``, and
feeds what is wrong (``relay.core.alerts.problems``) to an episode tracker.
Only the node that speaks for the cluster logs each episode's start and end
as a WARNING and queues it for the webhook: in broker mode the holder of the
cluster-status lease, in a mesh the oldest node of the roster
(``relay.links.speaker``, which also says what a node taking over owes).
The others follow the episodes silently, so that one taking over sends the
end of an episode begun before, never its start again; an outage of Redis
is the exception, its end sent by the node that sent its start
(``relay.links.lease_speaker``). The queue is bounded
(the oldest alert is dropped when it is full) and a task of its own POSTs
it, each alert tried ``attempts`` times with backoff: a webhook that is
slow or down delays nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import aiohttp

from relay.config.alerts import AlertsConfig
from relay.core.alerts import AlertTracker, alert_body, problems, signature, undecided
from relay.core.snapshot import NodeSnapshot
from relay.links.backoff import Backoff
from relay.links.lease_speaker import LeaseSpeaker
from relay.links.speaker import MeshSpeaker, members_of
from relay.process.periodic import every

__all__ = ["SIGNATURE_HEADER", "AlertSender"]

log = logging.getLogger("relay.alerts")

#: The header carrying ``sha256=<hex HMAC-SHA256 of the body>``.
SIGNATURE_HEADER = "X-Relay-Signature"


class AlertSender:
    """Watches one node's snapshot for problems and sends their episodes to the webhook."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        node: str,
        snapshot: Callable[[], NodeSnapshot],
        speaks: Callable[[], bool],
        mesh: MeshSpeaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Alert as ``node`` (its fingerprint) when ``speaks()``; nothing runs before start.

        In a mesh, ``mesh`` decides instead of ``speaks``, from the roster in
        the snapshot's ``nodes``.
        """
        self._config = config
        self._node = node
        self._snapshot = snapshot
        self._speaks = speaks
        self._mesh = mesh
        self._lease = LeaseSpeaker()
        self._clock = clock
        self._wall_clock = wall_clock
        self._tracker = AlertTracker(
            clock, {"repositories-out-of-sync": config.out_of_sync_seconds}
        )
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def reading(self) -> dict[str, int]:
        """The counters ``/metrics`` shows."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "queue": len(self._queue),
        }

    async def start(self) -> None:
        """Start watching and sending in the background."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.timeout_seconds)
        )
        self._tasks = [
            asyncio.create_task(
                every(
                    lambda: self._config.interval_seconds,
                    self.check,
                    doing="looking for alerts",
                    log=log,
                ),
                name="relay-alerts-watch",
            ),
            asyncio.create_task(self._send_forever(), name="relay-alerts-send"),
        ]

    async def stop(self) -> None:
        """Stop; alerts still queued are not sent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def check(self) -> None:
        """One look at the node: log and queue the episodes that began or ended."""
        snapshot = self._snapshot()
        events = self._tracker.update(problems(snapshot), undecided(snapshot))
        if self._mesh is not None:
            # Every look, events or not: the speaker follows who sends, and when last heard.
            members = () if snapshot.nodes is None else snapshot.nodes.get("members", ())
            events = self._mesh.look(members_of(members), events)
        else:
            events = self._lease.look(self._speaks(), events)
        if not events:
            return
        now_wall = self._wall_clock()
        now = self._clock()
        for event in events:
            log.warning("alert %s: %s", event.state, event.problem.summary)
            started_at = now_wall - (now - event.since)
            body = alert_body(event, node=self._node, at=now_wall, started_at=started_at)
            if len(self._queue) >= self._config.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(body)
        self._queued.set()

    async def _send_forever(self) -> None:
        config = self._config
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            body = self._queue.popleft()
            backoff = Backoff(config.backoff_initial_seconds, config.backoff_max_seconds)
            for attempt in range(1, config.attempts + 1):
                problem = await self._post(body)
                if problem is None:
                    self.sent += 1
                    break
                if attempt == config.attempts:
                    self.failed += 1
                    log.warning(
                        "alert not delivered after %d attempts: %s", config.attempts, problem
                    )
                    break
                await asyncio.sleep(backoff.next_delay())

    async def _post(self, body: bytes) -> str | None:
        """POST one alert; None when the webhook took it, else why not (no secret in it)."""
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        secret = self._config.secret
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature(body, secret.get_secret_value())
        try:
            async with self._session.post(self._config.url, data=body, headers=headers) as answer:
                if 200 <= answer.status < 300:
                    return None
                return f"the webhook answered {answer.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _describe(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
