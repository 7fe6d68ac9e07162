"""A fuzz run: lanes of seeded hostile input against one relay process, and the checks on it.

Each lane draws its cases from ``random.Random(f"{seed}/{lane}")`` (so a seed
names the same stream of inputs on every machine; how far each lane gets
depends on the machine) and plays them one at a time over raw sockets. A
monitor watches the node meanwhile: still running, nothing above WARNING
and no traceback in its log, and a well-behaved browser still receiving
what is posted. A run fails on a 5xx other than the documented ones, a close
with 1011, a troubling log line, a node that dies, or a node that stops
delivering. Failing inputs are saved for ``--replay``; those behind a log
line (which may come a little after its cause) are replayed one by one on
fresh nodes to find the one that reproduces it.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.fuzz.admin_inputs import admin_case
from tests.fuzz.cases import Case, save
from tests.fuzz.client_inputs import client_case
from tests.fuzz.exchange import allowed_5xx, judge, play
from tests.fuzz.report import RSS_EVERY, Failure, Report
from tests.fuzz.target import Canary, Target
from tests.fuzz.wire import Answer

#: What the README promises of a node with the default settings under this fuzzing:
#: /metrics (however many instance names are made up) and resident memory stay under.
METRICS_BOUND = 128 * 1024
RSS_BOUND = 160 * 1024 * 1024
#: Share of cases that go to the admin port (the rest are WebSocket sessions).
ADMIN_SHARE = 0.7
#: Bounds on one run whatever its duration: cases per lane, failures kept.
MAX_CASES_PER_LANE = 200_000
MAX_FAILURES = 20
#: How often the monitor looks at the node, and how often the canary checks delivery.
MONITOR_SECONDS = 0.5
CANARY_SECONDS = 5.0
#: A log line is blamed on the cases that were in flight up to this long before it.
BLAME_SECONDS = 2.0
#: Most cases replayed (halving on fresh nodes) to find what caused one log line, and
#: most log lines looked into so.
MAX_SUSPECTS = 160
REPLAYED_FAILURES = 3


@dataclass
class _Suspects:
    """A failure for a log line, and the cases that may have caused it."""

    failure: Failure
    cases: list[Case]


class FuzzRun:
    """One run: ``seconds`` of ``lanes`` concurrent lanes against a fresh node in ``directory``.

    Failing inputs are saved in ``out``; the causes of the first ``replays``
    troubling log lines are looked for on fresh nodes.
    """

    def __init__(
        self,
        seed: int,
        seconds: float,
        directory: Path,
        out: Path,
        *,
        lanes: int = 6,
        replays: int = REPLAYED_FAILURES,
    ) -> None:
        self.seed = seed
        self.seconds = seconds
        self.directory = directory
        self.out = out
        self.lanes = lanes
        self.replays = replays
        self.report = Report(seed=seed, lanes=lanes)
        self._recent: deque[tuple[float, float, Case]] = deque(maxlen=2000)
        self._in_flight: dict[int, Case] = {}
        self._suspects: list[_Suspects] = []
        self._stop = asyncio.Event()

    async def run(self) -> Report:
        """Fuzz, then stop the node, replay what needs it, and return the report."""
        print(f"fuzz: seed {self.seed}, {self.seconds:.0f} s, {self.lanes} lanes", flush=True)
        target = await asyncio.to_thread(Target(self.directory / "node").start)
        try:
            async with aiohttp.ClientSession() as session:
                await self._fuzz(target, Canary(target, session))
        finally:
            self.report.exit_status = await asyncio.to_thread(target.stop)
        self._watch_log(target, final=True)
        if self.report.exit_status != 0:
            self._fail(f"the node exited with status {self.report.exit_status}", [])
        await self._replay_suspects()
        return self.report

    async def _fuzz(self, target: Target, canary: Canary) -> None:
        report = self.report
        if not await canary.delivers():
            raise AssertionError("the node did not deliver before the fuzzing began")
        report.rss_before = report.rss_peak = target.rss()
        report.metrics_before = await canary.metrics_size()
        started = time.monotonic()
        deadline = started + self.seconds
        lanes = [asyncio.create_task(self._lane(n, target, deadline)) for n in range(self.lanes)]
        try:
            await self._monitor(target, canary, deadline)
        finally:
            self._stop.set()
            await asyncio.gather(*lanes)
        report.seconds = time.monotonic() - started
        if target.alive:
            report.canary_checks += 1
            if not await canary.delivers(fresh=True):
                report.canary_failures += 1
                self._fail("a new browser did not get a post after the run", self._blame(0))
            report.metrics_after = await canary.metrics_size()
            report.rss_after = target.rss()
            self._check_bounds()
        await canary.close()

    def _check_bounds(self) -> None:
        """Fail when /metrics or memory went past what the README promises."""
        report = self.report
        if report.metrics_after > METRICS_BOUND:
            kib = report.metrics_after // 1024
            self._fail(f"/metrics grew to {kib} KiB, past {METRICS_BOUND // 1024} KiB", [])
        if report.rss_peak > RSS_BOUND:
            mib = report.rss_peak // (1024 * 1024)
            self._fail(f"RSS grew to {mib} MiB, past {RSS_BOUND // (1024 * 1024)} MiB", [])

    async def _lane(self, lane: int, target: Target, deadline: float) -> None:
        """Play this lane's cases one after another until the deadline."""
        rng = random.Random(f"{self.seed}/{lane}")
        for n in range(MAX_CASES_PER_LANE):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            case = admin_case(rng) if rng.random() < ADMIN_SHARE else client_case(rng)
            case.origin = {"seed": self.seed, "lane": lane, "n": n}
            began = time.time()
            self._in_flight[lane] = case
            answer = await play(case, target.port(case.port))
            del self._in_flight[lane]
            self._recent.append((began, time.time(), case))
            self._count(case, answer)
            problems = judge(case, answer)
            if problems:
                self._fail(f"{case.note}: " + ", ".join(problems), [case])

    def _count(self, case: Case, answer: Answer) -> None:
        report = self.report
        if case.port == "admin":
            report.admin_requests += 1
            report.notes[case.note] += 1
            if case.ending == "half-close" and not answer.raw and not answer.closed:
                report.unanswered += 1
        else:
            report.client_sessions += 1
            _, odd, kinds = case.note.split("/", 2)
            report.notes[f"client/handshake-{odd}"] += 1
            for kind in kinds.split("+"):
                report.notes[f"client/{kind}"] += 1
        report.bytes_sent += case.size
        report.statuses.update(answer.statuses)
        report.close_codes.update(answer.close_codes)
        for status in answer.statuses:
            if status < 500:
                continue
            if allowed_5xx(case, answer, status):
                report.documented_5xx += 1
            else:
                report.server_errors += 1

    async def _monitor(self, target: Target, canary: Canary, deadline: float) -> None:
        """Until the deadline: the node runs, its log stays clean, the canary gets its posts."""
        report = self.report
        next_canary = time.monotonic() + CANARY_SECONDS
        next_sample = time.monotonic()
        while time.monotonic() < deadline and not self._stop.is_set():
            await asyncio.sleep(MONITOR_SECONDS)
            self._watch_log(target)
            if not target.alive:
                self._fail("the node died", self._blame(time.time()))
                return
            rss = target.rss()
            report.rss_peak = max(report.rss_peak, rss)
            if time.monotonic() >= next_sample:
                report.rss_samples.append(rss)
                next_sample += RSS_EVERY
            if time.monotonic() >= next_canary:
                report.canary_checks += 1
                if not await canary.delivers():
                    report.canary_failures += 1
                    self._fail("the canary browser did not get its post", self._blame(time.time()))
                next_canary = time.monotonic() + CANARY_SECONDS
            if len(self.report.failures) >= MAX_FAILURES:
                return  # enough kinds of trouble for one run

    def _watch_log(self, target: Target, *, final: bool = False) -> None:
        for at, line in target.new_trouble(final=final):
            self.report.troubles += 1
            if len(self.report.trouble_lines) < 50:
                self.report.trouble_lines.append(line)
            suspects = self._blame(at)
            failure = self._fail(f"logged: {line}", suspects)
            if failure is not None:
                self._suspects.append(_Suspects(failure, suspects))

    def _blame(self, at: float) -> list[Case]:
        """Cases in flight up to ``BLAME_SECONDS`` before ``at`` (the last ones when 0)."""
        if not at:
            return [case for _, _, case in list(self._recent)[-MAX_SUSPECTS:]]
        ended = [case for _, ended, case in self._recent if ended >= at - BLAME_SECONDS]
        return ended + list(self._in_flight.values())

    def _fail(self, why: str, cases: list[Case]) -> Failure | None:
        """Count a failure; the first of its kind is kept (and its inputs saved), and returned."""
        report = self.report
        kind = _kind(why)
        for failure in report.failures:
            if _kind(failure.why) == kind:
                failure.count += 1
                return None
        if len(report.failures) >= MAX_FAILURES:
            return None
        failure = Failure(why)
        if cases:
            name = f"seed-{self.seed}-{len(report.failures) + 1:02d}.json"
            failure.saved = save(self.out / name, cases, why, self.seed)
        report.failures.append(failure)
        print(f"fuzz: FAILURE {why} ({len(cases)} inputs saved)", flush=True)
        return failure

    async def _replay_suspects(self) -> None:
        """Find, on fresh nodes, which case behind a log line reproduces it, and save it alone."""
        for number, suspects in enumerate(self._suspects[: self.replays]):
            directory = self.directory / f"replay-{number}"
            culprit = await find_culprit(suspects.cases[-MAX_SUSPECTS:], directory)
            failure = suspects.failure
            failure.reproduced = culprit is not None
            if culprit is not None:
                name = f"seed-{self.seed}-culprit-{number + 1:02d}.json"
                failure.saved = save(self.out / name, [culprit], failure.why, self.seed)


def _kind(why: str) -> str:
    """What tells failures apart: ``why`` without times, addresses and numbers."""
    return re.sub(r"\d+", "N", re.sub(r"from \S+", "", why))


async def find_culprit(cases: list[Case], directory: Path) -> Case | None:
    """The one case of ``cases`` that troubles a fresh node by itself, found by halving.

    None when the cases do not trouble a fresh node together, or only do in
    combination.
    """
    if not await replay(cases, directory):
        return None
    while len(cases) > 1:
        half = len(cases) // 2
        if await replay(cases[:half], directory):
            cases = cases[:half]
        elif await replay(cases[half:], directory):
            cases = cases[half:]
        else:
            return None
    return cases[0]


async def replay(cases: list[Case], directory: Path) -> list[str]:
    """Play ``cases`` in turn on a fresh node, stop it; what counted against the node."""
    target = await asyncio.to_thread(Target(directory).start)
    problems = []
    try:
        for case in cases:
            problems += judge(case, await play(case, target.port(case.port)))
    finally:
        status = await asyncio.to_thread(target.stop)
    problems += [line for _, line in target.new_trouble(final=True)]
    if status != 0:
        problems.append(f"the node exited with status {status}")
    return problems
