"""Settings of the messaging service: environment variables prefixed ``FOG_MESSAGING_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

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
    #: publish each change's timeline entries to the gateways as soon as it commits (the fast
    #: path of live streams); without it they learn of changes from the events alone
    push_timeline: bool = True
