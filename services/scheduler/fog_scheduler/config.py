"""Settings of the scheduler service: environment variables prefixed ``FOG_SCHEDULER_``."""

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fog_scheduler.domain import WAITING_MAX
from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_SCHEDULER_", extra="ignore")

    service: ClassVar[str] = "scheduler"
    #: pack nodes full (fewer busy nodes) or spread work (less contention)
    strategy: Literal["binpack", "spread"] = "binpack"
    #: jobs decided per placement transaction
    placement_batch: int = 500
    #: at the latest, look for due work this often (NOTIFY wakes it sooner)
    placement_idle_s: float = 1.0
    #: push each placement's assignments to the gateways over core NATS as soon as it commits, ahead
    #: of their ``job.assigned`` events (off: nodes hear of new jobs from the events alone)
    push_assignments: bool = True
    #: while this replica leads placement and no job waits, insert a job already placed
    #: (off: every job waits for the placement loop's next cycle)
    place_at_submit: bool = True
    #: with a job placed at submit, tell its node before the insert commits, so that it gets the job ready
    #: to start meanwhile (off: the node hears of it once it is committed)
    prepare_at_submit: bool = True
    #: jobs of one owner that may wait for a node at once: a submit past it is refused (409 ``too_many_waiting``).
    #: Every placement cycle ranks all waiting jobs, so one owner's millions would slow everyone's placements.
    waiting_jobs_max_per_owner: int = Field(default=WAITING_MAX, ge=1)
    #: how often the leading replica counts the jobs not ended yet (``fog_scheduler_jobs``)
    queue_gauges_every_s: float = 5.0
    #: an ended job (its output and explanation too) is deleted this long after it ended; an array's jobs
    #: this long after its last job ended (default: 7 days)
    keep_ended_jobs_s: float = Field(default=7 * 86400.0, gt=0)
    #: how often the leading replica looks for ended jobs to delete
    purge_every_s: float = Field(default=600.0, gt=0)
    #: jobs deleted per transaction
    purge_batch: int = Field(default=1000, gt=0)
