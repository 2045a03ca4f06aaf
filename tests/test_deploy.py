"""``compose.yaml`` and the ``Dockerfile`` stay in step with the code: every command they run is
one the CLI has, every variable they set is a setting orderbot reads, and the services are the
ones the distributed profile is built for. No Docker engine is needed: the files are read.
(That the health checks pass on running processes is in tests/distributed/test_deploy_health.py.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
ORDERBOT_SERVICES = ("migrate", "server", "worker", "sender")
# Read by prometheus-client, not by Settings.
NOT_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR"}
# Read by Python, pip and the shell, not by Settings.
PYTHON_AND_PIP = {
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    found = compose()["services"][name]
    assert isinstance(found, dict)
    return found


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("name", ORDERBOT_SERVICES)
def test_each_orderbot_service_runs_a_command_the_cli_has(name: str) -> None:
    command = service(name)["command"]
    # Options are parsed before --help acts: a misspelt option or command fails here.
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, (command, result.output)


def test_a_misspelt_command_would_be_caught() -> None:
    """The check above can fail: the CLI rejects an option it does not have."""
    result = CliRunner().invoke(app, ["serve", "--workerz", "2", "--help"])
    assert result.exit_code != 0


def test_compose_sets_only_variables_orderbot_reads() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name in ORDERBOT_SERVICES:
        env = service(name).get("environment", {})
        unknown = set(env) - fields - NOT_SETTINGS
        assert not unknown, (name, unknown)
    # The Dockerfile's ENV lines (and their continuations): NAME=value pairs.
    image_env = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", dockerfile()))
    unknown = image_env - fields - PYTHON_AND_PIP
    assert not unknown, unknown


def test_the_orderbot_processes_run_the_distributed_profile() -> None:
    for name in ("server", "worker", "sender"):
        env = service(name)["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://"), name
        assert env["REDIS_URL"].startswith("redis://"), name
        assert env["RABBITMQ_URL"].startswith("amqp://"), name
    assert service("migrate")["command"] == ["db", "upgrade"]
    assert service("migrate")["environment"]["DATABASE_URL"].startswith("postgresql://")
    # The processes start after the migration, and after the services they need are healthy.
    for name in ("server", "worker", "sender"):
        depends = service(name)["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_the_services_are_the_versions_the_profile_is_built_for() -> None:
    assert service("rabbitmq")["image"] == "rabbitmq:3.13-management"
    assert service("postgres")["image"] == "postgres:15"
    redis = service("redis")
    assert redis["image"] == "redis:7"
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"  # AOF on: state survives
    # RabbitMQ's consumer timeout must outlast a reply's retries (docs/deployment.md,
    # deploy/rabbitmq.conf).
    mounted = [v.split(":")[0] for v in service("rabbitmq")["volumes"]]
    assert "./deploy/rabbitmq.conf" in mounted
    conf = (ROOT / "deploy" / "rabbitmq.conf").read_text()
    found = re.search(r"^consumer_timeout\s*=\s*(\d+)", conf, re.M)
    assert found is not None
    assert int(found.group(1)) >= 5 * 3600 * 1000


@pytest.mark.parametrize("name", ["rabbitmq", "redis", "postgres", "server", "worker", "sender"])
def test_every_long_running_service_has_a_health_check(name: str) -> None:
    check = service(name)["healthcheck"]
    assert check["test"][0] == "CMD"
    assert len(check["test"]) > 1


def test_the_image_is_slim_and_runs_as_a_user_that_is_not_root() -> None:
    text = dockerfile()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(b.endswith("-slim") for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), users
    # The user is created in the image with a fixed, non-zero uid.
    created = re.search(r"useradd\b.*--uid\s+(\d+).*\s(\S+)$", text, re.M)
    assert created is not None and int(created.group(1)) > 0
    assert created.group(2) == users[-1]
    assert re.search(r'^ENTRYPOINT \["orderbot"\]', text, re.M)


def test_the_image_leaves_out_what_it_must_not_contain() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for secret_or_local in (".env", ".venv", ".git", "*.db"):
        assert secret_or_local in ignored, secret_or_local
