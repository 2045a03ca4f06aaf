"""``deploy/kubernetes/`` stays in step with the code, as ``compose.yaml`` does (test_deploy.py):
every container runs the image's ``orderbot`` entry point with a command the CLI has, every
variable it sets is a setting orderbot reads, the server's probes ask routes the app answers,
and the worker's and sender's probes read the heartbeat file those processes touch. No cluster
is needed: the manifests are read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
PROCESSES = ("serve", "worker", "sender")


def documents() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def one(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name, len(matches))
    return matches[0]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec = one(kind, name)["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def workloads() -> list[tuple[str, str]]:
    return [("Deployment", f"orderbot-{p}") for p in PROCESSES] + [("Job", "orderbot-migrate")]


def containers() -> list[dict[str, Any]]:
    return [c for kind, name in workloads() for c in pod_spec(kind, name)["containers"]]


def compose_image() -> str:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    image = compose["x-orderbot"]["image"]
    assert isinstance(image, str)
    return image


def test_kustomization_applies_every_manifest() -> None:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


@pytest.mark.parametrize(("kind", "name"), workloads())
def test_each_container_runs_the_image_entry_point_with_a_command_the_cli_has(
    kind: str, name: str
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["orderbot"\]', dockerfile, re.M)
    for container in pod_spec(kind, name)["containers"]:
        assert container["image"] == compose_image()
        # `command` would replace the image's ENTRYPOINT (orderbot); only `args` are given.
        assert "command" not in container, name
        args = container["args"]
        result = CliRunner().invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (name, args, result.output)


def test_the_processes_run_what_compose_runs() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert pod_spec("Job", "orderbot-migrate")["containers"][0]["args"] == ["db", "upgrade"]
    assert compose["migrate"]["command"] == ["db", "upgrade"]
    for process in PROCESSES:
        args = pod_spec("Deployment", f"orderbot-{process}")["containers"][0]["args"]
        assert args[0] == process
    assert pod_spec("Job", "orderbot-migrate")["restartPolicy"] == "Never"


def test_every_variable_is_a_setting_orderbot_reads() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    config = one("ConfigMap", "orderbot-settings")["data"]
    secret = one("Secret", "orderbot-secrets")["stringData"]
    assert not set(config) - fields, set(config) - fields
    assert not set(secret) - fields, set(secret) - fields
    # The ConfigMap's values are valid settings (and the Secret's placeholders too).
    Settings(_env_file=None, **{k.lower(): v for k, v in {**config, **secret}.items()})  # type: ignore[call-arg]
    for container in containers():
        for env in container.get("env", []):
            assert env["name"] in fields, (container["name"], env["name"])
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "orderbot-secrets"
                assert ref["key"] in secret
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] == "orderbot-settings"
            else:
                assert source["secretRef"]["name"] == "orderbot-secrets"


def test_the_tokens_are_in_the_secret_not_in_the_config_map() -> None:
    config = one("ConfigMap", "orderbot-settings")["data"]
    secret = one("Secret", "orderbot-secrets")["stringData"]
    for name in (
        "CHAT2DESK_API_TOKEN",
        "WEBHOOK_SECRET",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_WEBHOOK_SECRET",
        "ADMIN_TOKEN",
        "DATABASE_URL",
        "RABBITMQ_URL",
    ):
        assert name in secret and name not in config, name
    # The distributed profile: PostgreSQL, Redis and RabbitMQ.
    assert secret["DATABASE_URL"].startswith("postgresql://")
    assert secret["REDIS_URL"].startswith("redis://")
    assert secret["RABBITMQ_URL"].startswith("amqp://")


async def test_the_servers_probes_ask_routes_the_app_answers(tmp_path: Path) -> None:
    container = pod_spec("Deployment", "orderbot-serve")["containers"][0]
    live = container["livenessProbe"]["httpGet"]
    ready = container["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/live", "/ready")
    # The probes' port is the one the server listens on.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert ports[live["port"]] == ports[ready["port"]] == int(env["PORT"])
    assert env["HOST"] == "0.0.0.0"
    runtime = EmbeddedRuntime(
        Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'k.db'}")  # type: ignore[call-arg]
    )
    transport = httpx.ASGITransport(app=create_app(runtime, run_background=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://k") as client:
        assert (await client.get(live["path"])).status_code == 200
        # Not started (no lifespan here): not ready yet, but the route exists.
        assert (await client.get(ready["path"])).status_code == 503
        assert (await client.get("/no-such-probe")).status_code == 404


def test_the_service_sends_traffic_to_the_servers_port() -> None:
    service = one("Service", "orderbot")["spec"]
    deployment = one("Deployment", "orderbot-serve")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert all(p["targetPort"] in names for p in service["ports"])


@pytest.mark.parametrize("process", ["worker", "sender"])
def test_worker_and_sender_probes_read_the_heartbeat_compose_reads(process: str) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    compose_check = compose[process]["healthcheck"]["test"][1:]
    container = pod_spec("Deployment", f"orderbot-{process}")["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == compose_check, (process, probe)
    # run_process touches $TMPDIR/orderbot-<role>.alive (/tmp in the image).
    assert f"/tmp/orderbot-{process}.alive" in " ".join(compose_check)


@pytest.mark.parametrize("process", PROCESSES)
def test_each_deployment_selects_its_own_pods(process: str) -> None:
    deployment = one("Deployment", f"orderbot-{process}")["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == process
    spec = deployment["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    # SHUTDOWN_TIMEOUT fits in the grace period Kubernetes gives after SIGTERM.
    shutdown = float(one("ConfigMap", "orderbot-settings")["data"]["SHUTDOWN_TIMEOUT"])
    assert spec["terminationGracePeriodSeconds"] > shutdown


def test_workers_and_the_server_share_the_uploads_volume() -> None:
    claim = one("PersistentVolumeClaim", "orderbot-uploads")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    upload_dir = one("ConfigMap", "orderbot-settings")["data"]["UPLOAD_DIR"]
    for process in ("serve", "worker"):
        spec = pod_spec("Deployment", f"orderbot-{process}")
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = spec["containers"][0]["volumeMounts"]
        mounted = [m for m in mounts if m["mountPath"] == upload_dir]
        assert mounted, process
        claim_name = volumes[mounted[0]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim_name == "orderbot-uploads"
