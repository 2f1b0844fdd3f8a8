"""Settings of the messaging service: environment variables prefixed ``FOG_MESSAGING_``."""

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fog_messaging.domain.files import FILES_BYTES_MAX
from fog_shared.settings import CommonSettings

DAY_S = 86_400.0


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_MESSAGING_", extra="ignore")

    service: ClassVar[str] = "messaging"
    #: timeline entries older than this are dropped; a sync from before them is ``limited``
    #: (messages themselves stay readable through the conversation's history)
    timeline_retention_s: float = 30 * DAY_S
    #: how often the retention runs
    timeline_prune_every_s: float = 3600.0
    #: a sync that missed more entries than this jumps to the newest ones and says ``limited``
    sync_catch_up_max: int = 10_000
    #: the most sends one transaction commits together (group commit); also how many sends
    #: this process takes in at once
    send_batch_max: int = 64
    #: an upload that has had no chunk for this long is removed: its row goes, its chunks leave the object store
    upload_idle_s: float = DAY_S
    #: how often idle uploads are looked for
    upload_sweep_every_s: float = 600.0
    #: the most uploads one member may have under way (each may hold up to 64 MiB until it ends)
    uploads_open_max: int = 16
    #: the most bytes of files one member keeps (complete, and under way): a start past it is refused (409
    #: ``quota_exceeded``) until the member deletes some. Complete files are kept until deleted.
    files_bytes_max_per_member: int = Field(default=FILES_BYTES_MAX, ge=1)
    #: publish each change's timeline entries to the gateways as soon as it commits (the fast
    #: path of live streams); without it they learn of changes from the events alone
    push_timeline: bool = True
