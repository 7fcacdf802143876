"""Run this repo's DAGs on a real, local Airflow 3: SQLite, LocalExecutor, the
scheduler, dag-processor and api-server as separate processes; trigger with the
Airflow CLI, wait for the run (and the Asset-scheduled fit_heads run), then stop
every process started, children included.

    python scripts/airflow_local.py run [--dag extract_cifar10] [--conf JSON] [--timeout S]

Used by scripts/run-main.sh and by tests/dags/test_airflow_processes.py.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("scheduler", "dag-processor", "api-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalAirflow:
    """A context manager owning an Airflow home and its processes."""

    def __init__(self, home: Path, dags: Path = REPO / "dags", extract_slots: int = 1, env: dict | None = None):
        self.home = Path(home).resolve()
        self.processes: dict[str, subprocess.Popen] = {}
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.extra_env = {**os.environ, **(env or {})}
        self.dags = Path(dags).resolve()
        self.secrets = {  # one secret shared by all processes, or tasks cannot authenticate to the api-server
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        }
        self._use_port(free_port())
        self.extract_slots = extract_slots

    def _use_port(self, port: int) -> None:
        self.port = port
        self.env = {
            **self.extra_env,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            **self.secrets,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "PYTHONUNBUFFERED": "1",
        }

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "LocalAirflow":
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        self.cli("pools", "set", "tlfs_extract", str(self.extract_slots), "bounds concurrent feature extraction")
        for attempt in range(3):
            for name in COMPONENTS:
                log = open(self.home / "logs" / f"{name}.log", "ab")
                self.processes[name] = subprocess.Popen(
                    [self.airflow, name], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.home,
                )
            if self._api_server_listens():
                return self
            self.stop()  # the port was taken between choosing and binding it: all again, on another
            self._use_port(free_port())
        raise RuntimeError(f"the api-server did not start listening; see {self.home}/logs/api-server.log")

    def _api_server_listens(self, timeout: float = 300) -> bool:
        """Whether the api-server we started (or one of its workers), and not another
        process, listens on our port."""
        import psutil

        server = self.processes["api-server"]
        deadline = time.monotonic() + timeout
        while server.poll() is None and time.monotonic() < deadline:
            try:
                tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                return False
            for process in tree:
                try:
                    if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in process.net_connections("tcp")):
                        return True
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.5)
        return False

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, grace: float = 20.0) -> list[int]:
        """SIGTERM every started process and all its descendants, then SIGKILL what is
        left. Returns the pids that had to be killed."""
        import psutil

        victims: dict[int, psutil.Process] = {}
        for proc in self.processes.values():
            try:
                parent = psutil.Process(proc.pid)
                victims[parent.pid] = parent
                for child in parent.children(recursive=True):
                    victims[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        for proc in self.processes.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in victims.values():
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(victims.values()), timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.started_pids = list(victims)
        self.processes.clear()
        return [p.pid for p in alive]

    # ------------------------------------------------------------ CLI
    def cli(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([self.airflow, *args], env=self.env, capture_output=True, text=True, cwd=self.home, timeout=300)
        if check and proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout

    def _json(self, *args: str):
        out = self.cli(*args, "-o", "json")
        lines = out.splitlines()
        for i, line in enumerate(lines):  # log lines may come before the JSON
            if line.startswith(("[{", "[]", "{")):
                try:
                    return json.loads("\n".join(lines[i:]))
                except json.JSONDecodeError:
                    continue
        if "No data found" in out or not out.strip():
            return []
        raise RuntimeError(f"airflow {' '.join(args)} printed no JSON:\n{out[-2000:]}")

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}; see {self.home}/logs/{name}.log")

    def _query(self, sql: str, *args) -> list[tuple]:
        """Read Airflow's metadata DB directly: polling through the `airflow` CLI costs a
        few CPU-seconds per call (its imports), half of a 2-core machine at one call per 5 s."""
        db = self.home / "airflow.db"
        if not db.exists():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
            return connection.execute(sql, args).fetchall()

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            known = {row[0] for row in self._query("SELECT dag_id FROM dag")}
            if set(dag_ids) <= known:
                return
            time.sleep(1)
        raise TimeoutError(f"DAGs {dag_ids} were not parsed within {timeout}s; see {self.home}/logs/dag-processor.log")

    def trigger(self, dag_id: str, conf: dict) -> str:
        runs = self._json("dags", "trigger", dag_id, "--conf", json.dumps(conf))
        run = runs[0] if isinstance(runs, list) else runs
        return run["dag_run_id"] if "dag_run_id" in run else run["run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        rows = self._query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", dag_id)
        return [{"run_id": run_id, "state": state} for run_id, state in rows]

    def run_ids(self, dag_id: str) -> set[str]:
        return {run.get("run_id") or run.get("dag_run_id") for run in self.runs(dag_id)}

    def failures(self, dag_id: str, run_id: str) -> list[tuple[str, str, Path]]:
        """Each failed task of a run: its name, the exception its last try's log ends with
        (Airflow 3 logs a line of JSON an event; a failure's carries ``error_detail``), and
        the log's path."""
        found = []
        rows = self._query("SELECT task_id, map_index, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? "
                           "AND state = 'failed' ORDER BY task_id, map_index", dag_id, run_id)
        for task_id, map_index, try_number in rows:
            folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
            log = (folder / f"map_index={map_index}" if map_index >= 0 else folder) / f"attempt={max(try_number, 1)}.log"
            name = task_id if map_index < 0 else f"{task_id}[{map_index}]"
            found.append((name, _last_exception(log), log))
        return found

    def wait_for_run(self, dag_id: str, run_id: str | None = None, timeout: float = 3600, known: set[str] | None = None) -> dict:
        """Wait until the run ``run_id`` (or, without one, a run of dag_id not among the
        ``known`` ids: one scheduled by an Asset) finishes; raises unless it succeeded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            for run in self.runs(dag_id):
                rid = run.get("run_id") or run.get("dag_run_id")
                if run_id is not None and rid != run_id:
                    continue
                if run_id is None and rid in (known or set()):
                    continue
                if run["state"] == "success":
                    return run
                if run["state"] == "failed":
                    raise RunFailed(f"{dag_id} run {rid} failed" + "".join(
                        f"\n  {task}: {reason}\n    (its log: {log})" for task, reason, log in self.failures(dag_id, rid)))
            time.sleep(1)
        raise TimeoutError(f"{dag_id} did not finish within {timeout}s")


class RunFailed(RuntimeError):
    """A DAG run failed: the message names each failed task and why."""


def _last_exception(log: Path) -> str:
    """``Type: message`` of the last exception a task's log records; its last line where
    none is recorded as such."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        details = event.get("error_detail") if isinstance(event, dict) else None
        if details:
            last = details[-1]
            return f"{last.get('exc_type')}: {last.get('exc_value')}"
    return lines[-1] if lines else "(an empty log)"


def run(dag: str, conf: dict, home: Path, timeout: float, with_fit: bool = True) -> dict:
    started = time.monotonic()
    fit_dag = dag.replace("extract_", "fit_heads_", 1)
    with LocalAirflow(home) as airflow:
        dags = [dag] + ([fit_dag] if with_fit else [])
        airflow.wait_for_dags(dags)
        for d in dags:
            airflow.cli("dags", "unpause", d)
        ready = time.monotonic()
        print(f"airflow up and {', '.join(dags)} parsed in {ready - started:.0f}s; triggering {dag}", flush=True)
        earlier_fits = airflow.run_ids(fit_dag) if with_fit else set()
        run_id = airflow.trigger(dag, conf)
        extract_run = airflow.wait_for_run(dag, run_id, timeout=timeout)
        done = time.monotonic()
        print(f"{dag} {run_id}: success in {done - ready:.0f}s", flush=True)
        fit_run = airflow.wait_for_run(fit_dag, timeout=timeout, known=earlier_fits) if with_fit else None
        finished = time.monotonic()
        if fit_run:
            print(f"{fit_dag}: success in {finished - done:.0f}s (scheduled by the feature set's Asset)", flush=True)
    return {"dag": dag, "run_id": run_id, "state": extract_run["state"], "fit_state": fit_run and fit_run["state"],
            "startup_seconds": round(ready - started, 1), "extract_seconds": round(done - ready, 1),
            "fit_seconds": round(finished - done, 1), "wall_seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="start Airflow, trigger a DAG, wait, stop")
    r.add_argument("--dag", default="extract_cifar10")
    r.add_argument("--conf", default="{}", help="JSON conf for the run, e.g. '{\"limit\": 2000}'")
    r.add_argument("--home", default=str(REPO / "tlfs-data" / "airflow"))
    r.add_argument("--timeout", type=float, default=4 * 3600)
    r.add_argument("--no-fit", action="store_true", help="do not wait for the Asset-scheduled fit_heads run")
    args = parser.parse_args()
    try:
        summary = run(args.dag, json.loads(args.conf), Path(args.home), args.timeout, with_fit=not args.no_fit)
    except RunFailed as failed:  # its tasks' reasons, not this script's traceback
        print(failed, file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
