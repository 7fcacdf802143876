from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


def airflow_home(home: Path) -> dict:
    """The environment of an Airflow home at ``home`` (created) reading this repo's dags/."""
    pytest.importorskip("airflow", reason="Airflow is installed by scripts/setup.sh (the [airflow] extra)")
    home.mkdir()
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    }


@pytest.fixture
def airflow_env(tmp_path, monkeypatch):
    """A fresh AIRFLOW_HOME for SQLite, this repo's dags/, set in the environment."""
    env = airflow_home(tmp_path / "airflow")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
