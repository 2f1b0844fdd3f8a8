"""``python -m fog_auth serve|migrate``."""

from fog_auth.app import MIGRATIONS, build_app
from fog_auth.config import Settings
from fog_shared.runtime import run_service_cli


def main() -> None:
    run_service_cli(Settings, build_app, MIGRATIONS)


if __name__ == "__main__":
    main()
