"""The manifests agree with the code they run: commands, settings, users, roles and NATS config."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from k8s_manifests import DEPLOY, REPO, Doc, Manifests, containers, tool
from pydantic_settings import BaseSettings

from fog_auth.config import Settings as AuthSettings
from fog_gateway.config import Settings as GatewaySettings
from fog_messaging.config import Settings as MessagingSettings
from fog_registry.config import Settings as RegistrySettings
from fog_scheduler.config import Settings as SchedulerSettings
from fog_shared.bus.permissions import PROVISIONER, all_permissions, password_variable, render
from fog_shared.provisioning import DATABASE_SERVICES, DatabaseSettings, StreamSettings
from fog_shared.subjects import SERVICES

#: the distributions of the repository (each directory with its own pyproject.toml)
DISTRIBUTIONS = ("shared", *(f"services/{s}" for s in SERVICES), "client", "agent", "cli")
#: which settings classes read a prefix's environment variables
SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "FOG_AUTH_": (AuthSettings,),
    "FOG_REGISTRY_": (RegistrySettings,),
    "FOG_SCHEDULER_": (SchedulerSettings,),
    "FOG_MESSAGING_": (MessagingSettings,),
    "FOG_GATEWAY_": (GatewaySettings,),
    "FOG_PROVISION_": (StreamSettings, DatabaseSettings),
}
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def _console_scripts() -> dict[str, str]:
    """Console script -> the distribution directory that defines it."""
    scripts = {}
    for dist in DISTRIBUTIONS:
        project = tomllib.loads((REPO / dist / "pyproject.toml").read_text())["project"]
        scripts |= dict.fromkeys(project.get("scripts", {}), dist)
    return scripts


def _installed_in_platform_image() -> set[str]:
    """The distribution directories the Dockerfile installs into the platform image's venv."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if "/opt/fog/bin/pip install" in line]
    return {token.removeprefix("./") for token in line.split("pip install", 1)[1].split()}


def _fog_containers(overlay: Manifests) -> list[tuple[str, Doc]]:
    """Containers running Fog's platform image."""
    return [
        (f"{w['metadata']['name']}/{c['name']}", c)
        for w in overlay.workloads()
        for c in containers(w)
        if c["image"].startswith("fog:")
    ]


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


# -- the image and its commands -------------------------------------------------------------------
def test_the_dockerfile_builds_a_slim_non_root_multi_stage_image_per_target() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, re.MULTILINE)
    assert {name for _, name in stages} >= {"build", "platform", "agent"}
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    # The platform image is the default target: the last stage.
    assert stages[-1][1] == "platform"


def test_the_agent_image_holds_only_the_agent_and_its_client() -> None:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if "/opt/fog-agent/bin/pip install" in line]
    assert line.split("pip install", 1)[1].split() == ["./client", "./agent"]


def test_every_container_command_is_a_console_script_installed_in_the_image(overlay: Manifests) -> None:
    scripts, installed = _console_scripts(), _installed_in_platform_image()
    for where, container in _fog_containers(overlay):
        script = container["command"][0]
        assert script in scripts, f"{where}: {script} is no console script of the repository"
        assert scripts[script] in installed, f"{where}: {scripts[script]} is not installed in the image"


def _package_data_globs(dist: str) -> dict[str, list[str]]:
    setuptools = tomllib.loads((REPO / dist / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
    globs: dict[str, list[str]] = setuptools.get("package-data", {})
    return globs


def _declared(dist: str, data_file: Path) -> bool:
    """Whether setuptools ships ``data_file`` in the wheel: a package-data glob of its package matches it."""
    globs = _package_data_globs(dist)
    for package_dir in data_file.parents:
        if not (package_dir / "__init__.py").exists():
            continue
        package = ".".join(package_dir.relative_to(REPO / dist).parts)
        relative = data_file.relative_to(package_dir).as_posix()
        for pattern in globs.get(package, []) + globs.get("*", []):
            if fnmatch.fnmatch(relative, pattern) and relative.count("/") == pattern.count("/"):
                return True
    return False


def test_the_image_gets_every_data_file_of_its_distributions() -> None:
    """The image installs the distributions as wheels, not from the source tree: SQL migrations
    and other non-Python files reach it only as declared package data."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for dist in _installed_in_platform_image():
        for path in tracked.splitlines():
            if not path.startswith(f"{dist}/fog_") or path.endswith(".py"):
                continue
            assert _declared(dist, REPO / path), f"{path} is not package data of {dist}: not in the image"


def test_every_container_subcommand_exists(rendered: dict[str, Manifests]) -> None:
    commands = {tuple(c["command"][:2]) for m in rendered.values() for _, c in _fog_containers(m)}
    by_script: dict[str, set[str]] = {}
    for script, subcommand in commands:
        by_script.setdefault(script, set()).add(subcommand)
    for script, subcommands in by_script.items():
        out = subprocess.run([tool(script), "--help"], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        listed = set(re.findall(r"^[│|]\s+([a-z][a-z-]*)\s", out.stdout, re.MULTILINE))
        assert subcommands <= listed, f"{script}: {subcommands - listed} missing from\n{out.stdout}"


# -- settings --------------------------------------------------------------------------------------
def test_every_fog_variable_is_a_setting_of_the_program_it_runs(overlay: Manifests) -> None:
    for where, container in _fog_containers(overlay):
        prefix = "FOG_" + container["command"][0].removeprefix("fog-").upper() + "_"
        fields = {f for cls in SETTINGS[prefix] for f in cls.model_fields}
        for name in _env(container):
            if name.startswith("FOG_"):
                assert name.startswith(prefix), f"{where}: {name} is not read by {container['command'][0]}"
                assert name.removeprefix(prefix).lower() in fields, f"{where}: no setting reads {name}"


def test_variables_are_defined_before_they_are_referenced(overlay: Manifests) -> None:
    """Kubernetes expands $(NAME) only from variables listed earlier; otherwise it stays literal."""
    for workload in overlay.workloads():
        for container in containers(workload):
            defined: set[str] = set()
            for entry in container.get("env", []):
                for ref in re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", entry.get("value", "")):
                    assert ref in defined, f"{workload['metadata']['name']}: {entry['name']} uses {ref} first"
                defined.add(entry["name"])


def _secret(env: dict[str, Doc], name: str) -> tuple[str, str]:
    """The (Secret name without kustomize's hash suffix, key) a variable comes from."""
    ref = env[name]["valueFrom"]["secretKeyRef"]
    return re.sub(r"-[a-z0-9]{10}$", "", ref["name"]), ref["key"]


def test_each_service_connects_as_its_own_nats_user_and_database_role(overlay: Manifests) -> None:
    for svc in SERVICES:
        workload = overlay.get("Deployment", svc)
        (main,) = containers(workload, init=False)
        env, prefix = _env(main), f"FOG_{svc.upper()}_"
        assert main["command"] == [f"fog-{svc}", "serve"]
        assert env[f"{prefix}NATS_URL"]["value"] == f"nats://{svc}:$(NATS_PASSWORD)@$(NATS_HOST):4222"
        assert _secret(env, "NATS_PASSWORD") == ("fog-nats-users", svc)
        assert env[f"{prefix}HTTP_HOST"]["value"] == "0.0.0.0"  # noqa: S104 - a pod listens on its own address
        assert int(env[f"{prefix}HTTP_PORT"]["value"]) == main["ports"][0]["containerPort"]
        if svc not in DATABASE_SERVICES:
            assert f"{prefix}DATABASE_URL" not in env
            continue
        assert env[f"{prefix}DATABASE_URL"]["value"] == f"postgresql://fog_{svc}:$(DB_PASSWORD)@$(PG_HOST):5432/fog"
        assert _secret(env, "DB_PASSWORD") == ("fog-postgres-roles", svc)
        (migrate,) = workload["spec"]["template"]["spec"]["initContainers"]
        assert migrate["command"] == [f"fog-{svc}", "migrate"]
        migrate_env = _env(migrate)
        owner_url = f"postgresql://fog_{svc}_owner:$(DB_OWNER_PASSWORD)@$(PG_HOST):5432/fog"
        assert migrate_env[f"{prefix}MIGRATE_DATABASE_URL"]["value"] == owner_url
        assert _secret(migrate_env, "DB_OWNER_PASSWORD") == ("fog-postgres-roles", f"{svc}-owner")


def test_the_database_job_makes_the_roles_the_services_log_in_as(overlay: Manifests) -> None:
    (job,) = containers(overlay.get("Job", "provision-database"))
    env = _env(job)
    assert job["command"] == ["fog-provision", "database"]
    required = {name for name, field in DatabaseSettings.model_fields.items() if field.is_required()}
    assert {f"FOG_PROVISION_{name.upper()}" for name in required} <= set(env)
    for svc in DATABASE_SERVICES:
        assert _secret(env, f"FOG_PROVISION_{svc.upper()}_PASSWORD") == ("fog-postgres-roles", svc)
        assert _secret(env, f"FOG_PROVISION_{svc.upper()}_OWNER_PASSWORD") == ("fog-postgres-roles", f"{svc}-owner")


def test_the_streams_job_provisions_as_the_provisioning_user(overlay: Manifests) -> None:
    (job,) = containers(overlay.get("Job", "provision-streams"))
    env = _env(job)
    assert job["command"] == ["fog-provision", "streams"]
    assert env["FOG_PROVISION_NATS_URL"]["value"] == f"nats://{PROVISIONER}:$(NATS_PASSWORD)@$(NATS_HOST):4222"
    assert _secret(env, "NATS_PASSWORD") == ("fog-nats-users", PROVISIONER)


# -- NATS --------------------------------------------------------------------------------------------
def _nats_files(overlay: Manifests) -> dict[str, str]:
    data: dict[str, str] = overlay.config_map("nats-config")["data"]
    return data


def test_nats_runs_the_generated_users(overlay: Manifests) -> None:
    assert _nats_files(overlay)["auth.conf"] == render(all_permissions())
    (server,) = containers(overlay.get("StatefulSet", "nats"))
    env = _env(server)
    for user in all_permissions():
        assert _secret(env, password_variable(user.user)) == ("fog-nats-users", user.user)


def test_jetstream_stores_on_disk_and_syncs_every_write(overlay: Manifests) -> None:
    conf = _nats_files(overlay)["nats.conf"]
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.MULTILINE)
    assert re.search(r"^\s*store_dir:\s*/data/jetstream\s*$", conf, re.MULTILINE)
    (server,) = containers(overlay.get("StatefulSet", "nats"))
    assert {"name": "data", "mountPath": "/data"} in server["volumeMounts"]


def test_nats_servers_streams_and_routes_agree(overlay: Manifests) -> None:
    servers = overlay.get("StatefulSet", "nats")["spec"]["replicas"]
    routes = re.findall(r"nats://nats-\d+\.nats-headless:6222", _nats_files(overlay)["cluster.conf"])
    stream_replicas = int(overlay.config_map("fog-endpoints")["data"]["stream-replicas"])
    expected = 3 if overlay.name == "production" else 1
    assert servers == stream_replicas == expected
    assert len(routes) == (servers if servers > 1 else 0)


def test_nats_accepts_its_configuration(overlay: Manifests, tmp_path: Path) -> None:
    """The real server parses the rendered files, with every password variable resolved."""
    for name, text in _nats_files(overlay).items():
        (tmp_path / name).write_text(text)
    env = {"POD_NAME": "nats-0"} | {password_variable(p.user): "x" for p in all_permissions()}
    out = subprocess.run(
        [tool("nats-server"), "-c", str(tmp_path / "nats.conf"), "-t"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- kind ------------------------------------------------------------------------------------------------
def test_the_kind_cluster_maps_the_gateway_to_the_host_port_e2e_kind_uses(rendered: dict[str, Manifests]) -> None:
    cluster = yaml.safe_load((DEPLOY / "kind" / "cluster.yaml").read_text())
    (mapping,) = cluster["nodes"][0]["extraPortMappings"]
    (port,) = rendered["kind"].get("Service", "gateway")["spec"]["ports"]
    assert mapping["containerPort"] == port["nodePort"]
    assert f"http://127.0.0.1:{mapping['hostPort']}" in (REPO / "Makefile").read_text()


def test_kind_secrets_are_made_once_readable_only_by_their_owner(tmp_path: Path) -> None:
    script = DEPLOY / "kind" / "make_secrets.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    first = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert {path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {0o600}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == first  # a re-apply keeps the passwords
    for text in first.values():
        for line in text.splitlines():
            key, _, value = line.partition("=")
            assert re.fullmatch(r"[a-z-]+", key)
            assert "@" in value or re.fullmatch(r"[0-9a-f]{48}|postgres", value), f"{key}: not hex"
