"""What the machine offers, declared anew each time the agent starts.

A node joins once, and its capabilities were what the machine had then. Since: the owner freed some disk, added
memory, narrowed the agent's CPUs, or changed the networks its jobs may have (``FOG_AGENT_JOB_NETWORKS``). Jobs are
placed by what the node declared, so a node that offers less than it declared has jobs placed that fail there.
At its start, the agent measures the machine again (``fingerprint``, with the disk where its jobs write) and
declares it (``PUT /v1/nodes/{id}/capabilities``, with the node's credential); the registry announces it when it
changed, and the scheduler places by it from then on.

In the background: while the gateway cannot be reached, it tries again with backoff; a refusal (a gateway older
than the route answers 404) is logged, and a network the node declared before and no longer gives is then told to
its owner, who must join again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from fog_agent.fingerprint import fingerprint
from fog_agent.state import NodeState
from fog_client import Capabilities

log = logging.getLogger(__name__)

#: between two tries the gateway did not answer, at first; doubled up to ``RETRY_MAX_S``
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
TRY_TIMEOUT_S = 10.0

Measure = Callable[[Path, Sequence[str]], Capabilities]


class Declaration:
    """Declares the machine's capabilities once, at the agent's start (``run``)."""

    def __init__(
        self,
        state: NodeState,
        work_root: Path,
        networks: Sequence[str],
        *,
        tell: Callable[[str], None] | None = None,
        measure: Measure = fingerprint,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.state, self.work_root, self.networks = state, work_root, tuple(networks)
        self.tell, self.measure, self.transport = tell, measure, transport
        self.retry_first_s = RETRY_FIRST_S

    async def run(self) -> bool:
        """Measure and declare; True once the gateway took it, False when it refused it (or measuring failed)."""
        try:
            return await self._declare()
        except Exception:  # a bug here must not take the agent down: it runs jobs by what it declared before
            log.exception("could not declare what this node offers")
            return False

    async def _declare(self) -> bool:
        capabilities = await asyncio.to_thread(self.measure, self.work_root, self.networks)
        body = capabilities.model_dump(mode="json", exclude_none=True)
        refusal = await self._put(body)
        if refusal is not None:
            log.warning("the gateway did not take what this node offers now (%s); jobs are placed by what it"
                        " declared before", refusal)  # fmt: skip
            warn_of_networks_no_longer_given(self.state.networks, self.networks, tell=self.tell)
            return False
        log.info(
            "declared what this node offers: %d cores, %.1f GiB of memory, %.1f GiB of disk for jobs, %d GPU(s), jobs"
            " with network %s", capabilities.cpu_cores, capabilities.memory_bytes / 2**30,
            capabilities.disk_bytes / 2**30, len(capabilities.gpus), " or ".join(capabilities.networks),
        )  # fmt: skip
        if self.state.networks != tuple(capabilities.networks):
            self.state.networks = tuple(capabilities.networks)
            await asyncio.to_thread(self.state.save)  # what the next start compares with, should it be refused
        return True

    async def _put(self, body: dict[str, object]) -> str | None:
        """None once the gateway took it; else why it refused."""
        url = f"/v1/nodes/{self.state.node_id}/capabilities"
        headers = {"Authorization": f"Bearer {self.state.credential}"}
        pause = self.retry_first_s
        async with httpx.AsyncClient(
            base_url=self.state.gateway_url, headers=headers, timeout=TRY_TIMEOUT_S, transport=self.transport
        ) as client:
            while True:
                try:
                    reply = await client.put(url, json=body)
                except httpx.HTTPError as exc:
                    log.info("cannot declare what this node offers yet (%s); trying again in %g s", exc, pause)
                else:
                    if reply.is_success:
                        return None
                    if reply.status_code < 500 and reply.status_code != 429:
                        return f"{reply.status_code}: {_detail(reply)}"
                    log.info("the gateway answered %d to the declaration; trying again in %g s", reply.status_code,
                             pause)  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(RETRY_MAX_S, pause * 2)


def _detail(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("detail") or reply.reason_phrase)[:200]
    except ValueError:
        return reply.reason_phrase


def warn_of_networks_no_longer_given(
    declared: tuple[str, ...] | None, given: tuple[str, ...], *, tell: Callable[[str], None] | None = None
) -> None:
    """Jobs are placed here by the networks the node declared: one it no longer gives fails each of them. Said in
    the log, and to the node's owner (``tell``), who may not read it."""
    lost = [network for network in declared or () if network not in given]
    if lost:
        warning = (
            f"This node was offered with jobs of network {' or '.join(lost)}, and now gives"
            f" {' or '.join(given)}: such jobs placed here fail (and are retried elsewhere). Its gateway did not"
            " take what it offers now: join again (fog-agent join --force) to say what it gives, or set"
            " FOG_AGENT_JOB_NETWORKS as it was."
        )
        log.warning("%s", warning)
        if tell is not None:
            tell(warning)
