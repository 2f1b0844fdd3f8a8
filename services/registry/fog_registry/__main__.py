"""``python -m fog_registry serve|migrate``."""

from fog_registry.app import MIGRATIONS, build_app
from fog_registry.config import Settings
from fog_shared.runtime import run_service_cli


def main() -> None:
    run_service_cli(Settings, build_app, MIGRATIONS)


if __name__ == "__main__":
    main()
