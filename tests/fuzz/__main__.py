"""``python -m tests.fuzz``: a fuzz run of any length, or a replay of saved inputs.

``make fuzz`` runs it for 150 s with a fresh seed; ``FUZZ_SEED=N`` replays a
run's stream of inputs, ``--replay FILE`` the inputs one run saved, each on a
fresh node.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys
import tempfile
from pathlib import Path

from tests.fuzz.cases import load
from tests.fuzz.run import FuzzRun, replay


def main(argv: list[str] | None = None) -> int:
    """Run or replay; the exit status is 0 when nothing counted against the node."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=150.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, help="the stream of inputs (default: a new one)")
    parser.add_argument("--lanes", type=int, default=6, help="cases played at once")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"), help="failing inputs")
    parser.add_argument("--report", type=Path, help="also write the summary here (markdown)")
    parser.add_argument("--replay", type=Path, nargs="+", help="replay saved inputs instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="relay-fuzz-") as work:
        if args.replay:
            return asyncio.run(_replay(args.replay, Path(work)))
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
        run = FuzzRun(seed, args.seconds, Path(work), args.out, lanes=args.lanes)
        report = asyncio.run(run.run())
    print("\n".join(report.lines()))
    if args.report:
        command = "python -m tests.fuzz " + shlex.join(
            ["--seconds", f"{args.seconds:g}", "--seed", str(seed), "--lanes", str(args.lanes)]
        )
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report.markdown(command))
    return 0 if report.passed else 1


async def _replay(paths: list[Path], work: Path) -> int:
    """Play each saved case alone on a fresh node; print what each one did."""
    failed = 0
    for path in paths:
        why, cases = load(path)
        print(f"{path}: saved because {why}")
        for number, case in enumerate(cases):
            problems = await replay([case], work / f"{path.stem}-{number}")
            failed += bool(problems)
            verdict = "; ".join(problems) if problems else "nothing counted against the node"
            print(f"  {case.note} {case.origin}: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
