"""``python -m fog_gateway serve|migrate``."""

from fog_gateway.app import MIGRATIONS, build_app
from fog_gateway.config import Settings
from fog_shared.runtime import run_service_cli


def main() -> None:
    run_service_cli(Settings, build_app, MIGRATIONS)


if __name__ == "__main__":
    main()
