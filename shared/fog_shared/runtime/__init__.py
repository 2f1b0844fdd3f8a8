"""What every service process shares: wiring, the ops HTTP routes, and ``serve``/``migrate``."""

from fog_shared.runtime.cli import run_service_cli
from fog_shared.runtime.service import Consumer, ServiceRuntime

__all__ = ["Consumer", "ServiceRuntime", "run_service_cli"]
