"""The deployment files, checked without a Docker engine (none runs on our machines):
the compose file's structure against Airflow 3's documented CeleryExecutor layout, and
the Dockerfiles' basics. Building and running them needs Docker."""

import re
from pathlib import Path

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
