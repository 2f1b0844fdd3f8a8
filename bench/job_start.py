"""How long the agent's sandbox takes to start a job, alone: from the assignment to the job's process running.

No platform: one ``Sandbox`` in this process, as ``fog-agent run`` makes it here (a uid of the job's own and a view of
its own as root, Landlock where the kernel has it, no cgroup unless ``--cgroups``). Each row runs ``--jobs`` single
``date +%s%N`` jobs ``--gap`` seconds apart (each finds the agent idle, as a lone job on an idle node does), and
reads from the job's own clock when its process ran. With ``--prepared``, each job is first prepared (as the
scheduler's word that it is about to be assigned makes it) and assigned ``--commit-ms`` later (its placement's
commit), as on the platform's way.

Usage: ``python bench/job_start.py [--networks host,none] [--jobs 60] [--gap 0.2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from fog_agent.cgroups import JobCgroups
from fog_agent.job_messages import Assignment, Resources
from fog_agent.sandbox import (
    Sandbox,
    confinement_from_env,
    job_networks_from_env,
    job_users_from_env,
    private_view_from_env,
)

CLOCK_JOB = ("date", "+%s%N")


async def one_row(
    sandbox: Sandbox, network: str, *, jobs: int, gap_s: float, prepared: bool, commit_ms: float
) -> list[float]:
    """Milliseconds from each job's assignment to its process running."""
    waits = []
    for index in range(jobs + 3):  # the first three warm up
        assignment = Assignment(f"b-{network}-{prepared}-{index}", 1, CLOCK_JOB, {}, 30.0, Resources(), network=network)  # type: ignore[arg-type]
        if prepared:
            sandbox.prepare_job(assignment)
            await asyncio.sleep(commit_ms / 1000)
        assigned_ns = time.time_ns()
        result = await sandbox.job(assignment).run()
        assert result.outcome == "succeeded", result
        if index >= 3:
            waits.append((int(result.output.strip()) - assigned_ns) / 1e6)
        await asyncio.sleep(gap_s)
    return waits


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="host,none", help="the networks to run rows for, in order")
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--gap", type=float, default=0.2, help="pause between jobs (s)")
    parser.add_argument("--commit-ms", type=float, default=3.0, help="with a preparation: its commit's time")
    parser.add_argument("--cgroups", action="store_true", help="each job in a cgroup of its own, as the agent may")
    args = parser.parse_args()
    networks = job_networks_from_env()
    with tempfile.TemporaryDirectory(prefix="fog-job-start-", dir="/var/tmp") as root:
        os.chmod(root, 0o711)  # noqa: S103 -- the jobs' users pass through it to their directories
        sandbox = Sandbox(
            Path(root) / "work", users=job_users_from_env(), confinement=confinement_from_env(),
            cgroups=JobCgroups.found() if args.cgroups else None, private_view=private_view_from_env(),
            networks=networks,
        )  # fmt: skip
        sandbox.prepare()
        try:
            print(f"networks given here: {', '.join(networks)}; ms from the assignment to the process running")
            print(f"{'network':<8} {'prepared':<9} {'jobs':>5} {'p50':>7} {'p90':>7} {'p99':>7}")
            for network in args.networks.split(","):
                for prepared in (False, True):
                    waits = await one_row(
                        sandbox, network, jobs=args.jobs, gap_s=args.gap, prepared=prepared, commit_ms=args.commit_ms
                    )
                    q = statistics.quantiles(waits, n=100)
                    print(f"{network:<8} {prepared!s:<9} {len(waits):>5} {q[49]:>7.2f} {q[89]:>7.2f} {q[98]:>7.2f}")
        finally:
            await sandbox.close()
            await sandbox.removals.finished()


if __name__ == "__main__":
    asyncio.run(main())
