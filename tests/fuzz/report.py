"""What one fuzz run did and found, as plain text and as the markdown kept in bench/results/."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
#: How often the run notes the node's RSS.
RSS_EVERY = 15.0


@dataclass
class Failure:
    """Something that counts against the node, with the inputs that may have caused it."""

    why: str
    #: How many times a failure of this kind happened.
    count: int = 1
    #: The saved inputs (``python -m tests.fuzz --replay PATH``), once saved.
    saved: Path | None = None
    #: Confirmed by replaying on a fresh node (None: not replayed).
    reproduced: bool | None = None


@dataclass
class Report:
    """Counts and measurements of one run."""

    seed: int
    seconds: float = 0.0
    lanes: int = 0
    admin_requests: int = 0
    client_sessions: int = 0
    bytes_sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    close_codes: Counter[int] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    #: 5xx answers that count against the node, and the documented ones (501, 505).
    server_errors: int = 0
    documented_5xx: int = 0
    #: Half-closed admin requests that got neither an answer nor a close in time.
    unanswered: int = 0
    #: Log records above WARNING or with a traceback, and the first of them.
    troubles: int = 0
    trouble_lines: list[str] = field(default_factory=list)
    canary_checks: int = 0
    canary_failures: int = 0
    exit_status: int | None = None
    rss_before: int = 0
    rss_after: int = 0
    rss_peak: int = 0
    #: RSS every ``RSS_EVERY`` seconds of the run, to tell growth from a plateau.
    rss_samples: list[int] = field(default_factory=list)
    metrics_before: int = 0
    metrics_after: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Nothing counted against the node."""
        return not self.failures and self.exit_status == 0

    def lines(self) -> list[str]:
        """The report in plain text, one fact per line."""
        out = [
            f"seed {self.seed}: {self.seconds:.0f} s, {self.lanes} lanes",
            f"admin requests {self.admin_requests}, client sessions {self.client_sessions}, "
            f"{self.bytes_sent / MIB:.1f} MiB sent",
            f"5xx counted against the node: {self.server_errors} "
            f"(documented 501/505: {self.documented_5xx})",
            f"closes with 1011: {self.close_codes.get(1011, 0)}",
            f"log records above WARNING or with a traceback: {self.troubles}",
            f"half-closed requests neither answered nor closed in 5 s: {self.unanswered}",
            f"canary deliveries: {self.canary_checks - self.canary_failures}/{self.canary_checks}",
            f"node exit status after SIGTERM: {self.exit_status}",
            f"RSS: {self.rss_before / MIB:.1f} MiB before, {self.rss_after / MIB:.1f} MiB after, "
            f"{self.rss_peak / MIB:.1f} MiB peak",
            f"RSS every {RSS_EVERY:.0f} s (MiB): "
            + ", ".join(f"{rss / MIB:.0f}" for rss in self.rss_samples),
            f"/metrics: {self.metrics_before / 1024:.1f} KiB before, "
            f"{self.metrics_after / 1024:.1f} KiB after",
            "statuses: " + _counts(self.statuses),
            "close codes: " + _counts(self.close_codes),
        ]
        for failure in self.failures:
            replay = {None: "", True: ", reproduced on a fresh node", False: ", not reproduced"}
            where = f" (saved: {failure.saved})" if failure.saved else ""
            times = f" ({failure.count} times)" if failure.count > 1 else ""
            out.append(f"FAILURE {failure.why}{times}{replay[failure.reproduced]}{where}")
        out.append("PASSED" if self.passed else f"FAILED (seed {self.seed})")
        return out

    def markdown(self, command: str) -> str:
        """The summary kept in bench/results/fuzz/."""
        facts = "\n".join(f"- {line}" for line in self.lines())
        kinds = "\n".join(
            f"| {note} | {count} |" for note, count in sorted(self.notes.items(), key=_by_count)
        )
        return (
            f"# Fuzz run, seed {self.seed}\n\n"
            f"Command: `{command}`\n\n{facts}\n\n"
            "## Inputs by generator\n\n| generator | cases |\n|---|---|\n"
            f"{kinds}\n"
        )


def _counts(counter: Counter[int]) -> str:
    return ", ".join(f"{key}: {count}" for key, count in sorted(counter.items())) or "none"


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
