"""The compose deployment, run for real: build, start, extract through Airflow, lose a
worker, compare with a direct extraction, tear down, and print one JSON line of figures.

Called by scripts/deploy-check.sh, which first installs what is missing (Docker's engine,
Compose v2, debootstrap). Every stage logs to stderr with the seconds since the start;
the last line on stdout is the JSON summary. A failed check exits non-zero, naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
SHARED = ROOT.parent / "shared" / "data" / "cifar10"
BASE_IMAGE = "tlfs/debian:bookworm"
# image tag -> Dockerfile, as docker/compose.no-registry.yaml names them
IMAGES = {
    "tlfs/postgres-debian:15": "docker/debian/Dockerfile.postgres",
    "tlfs/redis-debian:7": "docker/debian/Dockerfile.redis",
    "tlfs/s3-moto:5": "docker/debian/Dockerfile.s3",
    "tlfs/airflow-debian:3.3.2": "docker/debian/Dockerfile.airflow",
}
OLD_DEFAULT_JWT_SECRET = "change-me-to-a-long-random-secret"  # the compose file's fallback until session 7
START = time.monotonic()


class CheckFailed(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[deploy-check {time.monotonic() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout or "")[-3000:]
        raise CheckFailed(f"{' '.join(cmd[:6])} ... exited {result.returncode}\n{tail}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_exists(tag: str) -> bool:
    return run(["docker", "image", "inspect", tag], check=False).returncode == 0


# --- images ---------------------------------------------------------------------------

def build_images(cold: bool, build_ca: str | None) -> float:
    """The registry-free images: a debootstrap base, then each Dockerfile on it."""
    t0 = time.monotonic()
    if cold:
        for tag in [*IMAGES, BASE_IMAGE]:
            run(["docker", "image", "rm", "-f", tag], check=False)
    if build_ca:
        shutil.copyfile(build_ca, DOCKER / "build-ca" / "ca.crt")
    if not image_exists(BASE_IMAGE):
        with tempfile.TemporaryDirectory(prefix="tlfs-debootstrap-") as rootfs:
            log("debootstrap: a minimal Debian bookworm for the base image")
            run(["debootstrap", "--variant=minbase", "bookworm", rootfs])
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True)
            tar.wait()
            if imported.returncode != 0 or tar.returncode != 0:
                raise CheckFailed(f"docker import of the base image failed: {imported.stderr[-1000:]}")
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # Debian's engine has no buildx; the classic builder does
    for tag, dockerfile in IMAGES.items():
        log(f"building {tag} from {dockerfile}")
        # --force-rm: a failed step leaves no container behind (the classic builder keeps it otherwise)
        run(["docker", "build", "-q", "--force-rm", "-f", dockerfile, "-t", tag, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "."],
            env=env)
    return time.monotonic() - t0


# --- the stack ------------------------------------------------------------------------

class Stack:
    def __init__(self, project: str, workdir: Path, heartbeat_timeout: int):
        self.project = project
        self.env_file = workdir / ".env"
        self.api_port, self.s3_port = free_port(), free_port()
        run(["bash", str(DOCKER / "secrets.sh"), str(self.env_file)])
        with open(self.env_file, "a") as f:
            f.write(f"TLFS_API_PORT={self.api_port}\nTLFS_S3_PORT={self.s3_port}\n"
                    f"TLFS_TASK_HEARTBEAT_TIMEOUT={heartbeat_timeout}\n")
        self.secrets = dict(line.split("=", 1) for line in self.env_file.read_text().splitlines()
                            if "=" in line and not line.startswith("#"))

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        files = ["docker-compose.yaml", "compose.no-registry.yaml", "compose.publish-s3.yaml"]
        cmd = ["docker", "compose", "--project-directory", str(DOCKER), "-p", self.project,
               "--env-file", str(self.env_file), *[a for f in files for a in ("-f", str(DOCKER / f))], *args]
        return run(cmd, check=check)

    def up(self, timeout: int) -> float:
        t0 = time.monotonic()
        self.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", str(timeout))
        return time.monotonic() - t0

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)

    def airflow(self, *args: str) -> str:
        return self.compose("exec", "-T", "airflow-apiserver", "airflow", *args).stdout

    def sql(self, query: str) -> list[list[str]]:
        out = self.compose("exec", "-T", "postgres", "psql", "-U", "airflow", "-d", "airflow", "-At", "-F", "\t",
                           "-c", query).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def containers(self, service: str) -> dict[str, str]:
        """Container hostname (its short id, which Celery and Airflow record) -> name."""
        out = run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                   "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.ID}} {{.Names}}"]).stdout
        return dict(line.split(" ", 1) for line in out.splitlines())

    def s3_env(self) -> dict:
        return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}", "AWS_ACCESS_KEY_ID": self.secrets["MINIO_ROOT_USER"],
                "AWS_SECRET_ACCESS_KEY": self.secrets["MINIO_ROOT_PASSWORD"], "AWS_DEFAULT_REGION": "us-east-1"}


def forged_token(secret: str) -> str:
    """An admin API token as Airflow's SimpleAuthManager signs them (HS512, its audience)."""
    import warnings

    import jwt

    warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)  # the old secret is short
    now = int(time.time())
    claims = {"sub": "admin", "role": "ADMIN", "aud": "apache-airflow", "iat": now, "nbf": now, "exp": now + 600,
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secret, algorithm="HS512")


def api_status(port: int, token: str) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/dags", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def check_old_secret_refused(stack: Stack) -> dict:
    old = api_status(stack.api_port, forged_token(OLD_DEFAULT_JWT_SECRET))
    real = api_status(stack.api_port, forged_token(stack.secrets["AIRFLOW_JWT_SECRET"]))
    log(f"API with a token signed by the old default secret: HTTP {old}; by the deployment's own: HTTP {real}")
    if old not in (401, 403) or real != 200:
        raise CheckFailed(f"token check: old default secret gave HTTP {old} (want 401/403), own secret {real} (want 200)")
    return {"old_default_secret_token_http": old, "own_secret_token_http": real}


# --- runs -----------------------------------------------------------------------------

def wait_for_dags(stack: Stack, dag_ids: list[str], timeout: int) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parsed = {row[0] for row in stack.sql("select dag_id from dag where is_stale = false")}
        if set(dag_ids) <= parsed:
            return
        time.sleep(3)
    raise CheckFailed(f"the dag-processor did not parse {dag_ids} within {timeout}s")


def trigger(stack: Stack, dag_id: str, conf: dict) -> str:
    run_id = f"deploy_check__{uuid.uuid4().hex[:8]}"
    stack.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
    return run_id


def run_state(stack: Stack, dag_id: str, run_id: str) -> str:
    rows = stack.sql(f"select state from dag_run where dag_id = '{dag_id}' and run_id = '{run_id}'")
    return rows[0][0] if rows else "missing"


def task_rows(stack: Stack, dag_id: str, run_id: str, table: str = "task_instance") -> list[dict]:
    keys = ["task_id", "map_index", "state", "hostname", "try_number", "start_date"]
    rows = stack.sql(f"select {', '.join(keys)} from {table} where dag_id = '{dag_id}' and run_id = '{run_id}'")
    return [dict(zip(keys, row)) for row in rows]


def wait_for_run(stack: Stack, dag_id: str, run_id: str, timeout: int, kill_worker: bool = False) -> dict:
    """Poll a run to its end; with kill_worker, SIGKILL the worker of the first shard task
    seen running (mid-extraction) and keep it down, as a lost machine."""
    t0 = time.monotonic()
    killed: dict | None = None
    while time.monotonic() - t0 < timeout:
        state = run_state(stack, dag_id, run_id)
        if state in ("success", "failed"):
            return {"state": state, "seconds": time.monotonic() - t0, "killed": killed}
        if kill_worker and killed is None:
            for ti in task_rows(stack, dag_id, run_id):
                if ti["task_id"].endswith("extract_shard") and ti["state"] == "running" and ti["hostname"]:
                    time.sleep(5)  # into the shard's extraction, past its start
                    again = [t for t in task_rows(stack, dag_id, run_id)
                             if t["task_id"] == ti["task_id"] and t["map_index"] == ti["map_index"]]
                    if not again or again[0]["state"] != "running" or again[0]["try_number"] != ti["try_number"]:
                        continue  # it finished meanwhile: wait for a shard still extracting
                    workers = stack.containers("airflow-worker")
                    name = workers.get(ti["hostname"])
                    if name is None:
                        raise CheckFailed(f"shard task ran on {ti['hostname']}, not one of the workers {workers}")
                    run(["docker", "update", "--restart=no", name])
                    run(["docker", "kill", name])
                    killed = {"map_index": int(ti["map_index"]), "try_number": int(ti["try_number"]),
                              "worker": name, "hostname": ti["hostname"]}
                    log(f"killed worker {name} while it extracted shard {ti['map_index']} (try {ti['try_number']})")
                    break
        time.sleep(2)
    raise CheckFailed(f"{dag_id} run {run_id} did not finish within {timeout}s (state {run_state(stack, dag_id, run_id)})")


def shards_per_worker(stack: Stack, run_id: str, names: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ti in task_rows(stack, "extract_cifar10", run_id):
        if ti["task_id"].endswith("extract_shard") and ti["state"] == "success":
            worker = names.get(ti["hostname"], ti["hostname"])
            counts[worker] = counts.get(worker, 0) + 1
    return counts


def retried_elsewhere(stack: Stack, run_id: str, killed: dict) -> dict:
    """The killed shard's final try: succeeded, on another worker, after a retry."""
    final = [ti for ti in task_rows(stack, "extract_cifar10", run_id)
             if ti["task_id"].endswith("extract_shard") and int(ti["map_index"]) == killed["map_index"]][0]
    history = [ti for ti in task_rows(stack, "extract_cifar10", run_id, "task_instance_history")
               if ti["task_id"].endswith("extract_shard") and int(ti["map_index"]) == killed["map_index"]]
    ok = (final["state"] == "success" and final["hostname"] != killed["hostname"]
          and int(final["try_number"]) > killed["try_number"])
    return {"ok": ok, "final_try": int(final["try_number"]), "final_host": final["hostname"],
            "earlier_tries": [(h["try_number"], h["state"], h["hostname"]) for h in history]}


# --- results --------------------------------------------------------------------------

def compare_sets(store_a: str, store_b: str) -> dict:
    """Every layer, split and row of two sets, matched on image_id: equal bytes or not."""
    import numpy as np

    from tlfs import features

    a = features.open_set("cifar10", "efficientnet_lite0", store=store_a)
    b = features.open_set("cifar10", "efficientnet_lite0", store=store_b)
    compared = equal = 0
    worst = 0.0
    for layer in a.layers:
        for split in a.splits:
            fa = features.load("cifar10", "efficientnet_lite0", layer, split, store=store_a)
            fb = features.load("cifar10", "efficientnet_lite0", layer, split, store=store_b)
            if set(fa.image_id) != set(fb.image_id):
                raise CheckFailed(f"{layer}/{split}: the two sets hold different images "
                                  f"({len(set(fa.image_id) ^ set(fb.image_id))} differ)")
            fb = fb.set_index("image_id").loc[fa.image_id]
            xa = np.stack(fa.features.to_numpy()).astype(np.float32)
            xb = np.stack(fb.features.to_numpy()).astype(np.float32)
            same = (xa == xb).all(axis=1) & (fa.label.to_numpy() == fb.label.to_numpy())
            compared += len(same)
            equal += int(same.sum())
            worst = max(worst, float(np.abs(xa - xb).max()) if len(xa) else 0.0)
    return {"rows_compared": compared, "rows_equal": equal, "max_abs_diff": worst, "layers": len(a.layers),
            "splits": list(a.splits), "version": b.version}


def heads_metrics(store: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(store)
    return sorted(p for p in fs.find(root) if "/_heads/" in p and p.endswith(".json"))


def direct_extract(sources: list[str], per_split: int, shard_size: int, store: Path, models: str) -> float:
    t0 = time.monotonic()
    cmd = [str(ROOT / ".venv" / "bin" / "tlfs"), "extract", "--dataset", "cifar10", "--backbone", "efficientnet_lite0",
           "--limit", str(per_split), "--shard-size", str(shard_size), "--store", str(store), "--models", models,
           "--no-progress", *[a for s in sources for a in ("--source", s)]]
    run(cmd)
    return time.monotonic() - t0


def upload(stack: Stack, names: list[str]) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{stack.s3_port}", region_name="us-east-1",
                          aws_access_key_id=stack.secrets["MINIO_ROOT_USER"],
                          aws_secret_access_key=stack.secrets["MINIO_ROOT_PASSWORD"])
    uris = []
    for name in names:
        path = SHARED / name
        if not path.exists():
            raise CheckFailed(f"{path} is missing: the shared CIFAR-10 archives are needed")
        client.upload_file(str(path), "tlfs", f"data/cifar10/{name}")
        uris.append(f"s3://tlfs/data/cifar10/{name}")
    return uris


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-split", type=int, default=2000, help="class-balanced sample per split (default 2000)")
    parser.add_argument("--shard-size", type=int, default=250, help="images per shard task (default 250)")
    parser.add_argument("--cold", action="store_true", help="remove the images first: measure a start from nothing")
    parser.add_argument("--build-ca", help="a CA bundle that pip in the image builds trusts (an HTTPS proxy's)")
    parser.add_argument("--heartbeat-timeout", type=int, default=60,
                        help="seconds before a task whose worker vanished is failed and retried (default 60)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running (docker compose -p tlfs-check down -v)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed to each DAG run")
    args = parser.parse_args(argv)
    figures: dict = {}
    workdir = Path(tempfile.mkdtemp(prefix="tlfs-deploy-check-"))
    stack = None
    try:
        figures["images_built_s"] = round(build_images(args.cold, args.build_ca), 1)
        log(f"images built in {figures['images_built_s']}s")
        stack = Stack("tlfs-check", workdir, args.heartbeat_timeout)
        figures["stack_up_s"] = round(stack.up(timeout=600), 1)
        workers = stack.containers("airflow-worker")
        log(f"stack up in {figures['stack_up_s']}s; CPU workers: {sorted(workers.values())}")
        os.environ.update(stack.s3_env())  # this process reads the bucket too (features.load, fsspec)
        figures.update(check_old_secret_refused(stack))
        sources = upload(stack, ["train.tar.gz", "test.tar.gz"])
        wait_for_dags(stack, ["extract_cifar10", "fit_heads_cifar10"], timeout=300)
        conf = {"sources": sources, "limit": args.per_split, "shard_size": args.shard_size, "finetune": "never"}
        first = trigger(stack, "extract_cifar10", conf)
        log(f"triggered extract_cifar10 run {first} ({args.per_split} images per split, s3 store)")
        done = wait_for_run(stack, "extract_cifar10", first, args.timeout)
        if done["state"] != "success":
            raise CheckFailed(f"extract_cifar10 run {first} ended {done['state']}")
        figures["dag_run_s"] = round(done["seconds"], 1)
        figures["cold_start_s"] = round(time.monotonic() - START, 1)
        figures["shards_per_worker"] = shards_per_worker(stack, first, workers)
        log(f"committed in {figures['dag_run_s']}s after the trigger; shards per worker {figures['shards_per_worker']}")
        if len(figures["shards_per_worker"]) < 2:
            raise CheckFailed(f"the shard tasks ran on one worker only: {figures['shards_per_worker']}")

        deadline = time.monotonic() + args.timeout
        while not (fits := [r for r in stack.sql("select run_id, state from dag_run where dag_id = 'fit_heads_cifar10' "
                                                 "and run_type = 'asset_triggered'") if r[1] in ("success", "failed")]):
            if time.monotonic() > deadline:
                raise CheckFailed("fit_heads_cifar10 did not run on the feature set's Asset")
            time.sleep(3)
        if fits[0][1] != "success":
            raise CheckFailed(f"fit_heads_cifar10 run {fits[0][0]} failed")
        metrics = heads_metrics("s3://tlfs/store")
        figures["fit_heads_on_asset"] = bool(metrics)
        log(f"fit_heads_cifar10 ran on the Asset; {len(metrics)} metrics files in the bucket")
        if not metrics:
            raise CheckFailed("fit_heads_cifar10 succeeded but no metrics are in the bucket")

        direct = workdir / "direct-store"
        figures["direct_extract_s"] = round(direct_extract(sources, args.per_split, args.shard_size, direct,
                                                           "s3://tlfs/models"), 1)
        first_cmp = compare_sets(str(direct), "s3://tlfs/store")
        log(f"the bucket's set against a direct tlfs extract: {first_cmp}")

        # Lose a worker mid-shard: a full re-extraction (incremental off) in a new plan (shards
        # twice as large, so each takes a while), one worker killed while it extracts.
        conf_kill = {**conf, "incremental": False, "shard_size": args.shard_size * 2}
        second = trigger(stack, "extract_cifar10", conf_kill)
        log(f"triggered extract_cifar10 run {second} (everything again); a worker will be killed mid-shard")
        done2 = wait_for_run(stack, "extract_cifar10", second, args.timeout, kill_worker=True)
        if done2["state"] != "success" or not done2["killed"]:
            raise CheckFailed(f"run {second} ended {done2['state']}; killed: {done2['killed']}")
        retry = retried_elsewhere(stack, second, done2["killed"])
        log(f"killed shard's tries: {retry}")
        second_cmp = compare_sets(str(direct), "s3://tlfs/store")
        log(f"after the kill, against the direct extraction: {second_cmp}")
        figures.update({
            "rows_compared": first_cmp["rows_compared"] + second_cmp["rows_compared"],
            "rows_equal": first_cmp["rows_equal"] + second_cmp["rows_equal"],
            "max_abs_diff": max(first_cmp["max_abs_diff"], second_cmp["max_abs_diff"]),
            "killed_worker": done2["killed"]["worker"],
            "killed_worker_task_retried": retry["ok"],
            "killed_run_s": round(done2["seconds"], 1),
            "shards_per_worker_killed_run": shards_per_worker(stack, second, workers),
            "per_split": args.per_split,
        })
        failures = []
        if figures["rows_equal"] != figures["rows_compared"]:
            failures.append(f"{figures['rows_compared'] - figures['rows_equal']} rows differ")
        if second_cmp["version"] != first_cmp["version"] + 1:
            failures.append(f"the run with the killed worker did not commit a new version ({second_cmp['version']})")
        if not retry["ok"]:
            failures.append(f"the killed worker's shard was not retried elsewhere: {retry}")
        figures["ok"] = not failures
        return_code = 0 if not failures else 1
        for failure in failures:
            log(f"FAILED: {failure}")
    except CheckFailed as exc:
        log(f"FAILED: {exc}")
        figures["ok"] = False
        figures["error"] = str(exc).splitlines()[0]
        return_code = 1
    finally:
        if stack is not None and not args.keep:
            log("stopping the stack and removing its containers, network and volumes")
            stack.down()
        shutil.rmtree(workdir, ignore_errors=True)
        if args.build_ca:
            (DOCKER / "build-ca" / "ca.crt").unlink(missing_ok=True)
    print(json.dumps(figures), flush=True)
    return return_code


if __name__ == "__main__":
    sys.exit(main())
