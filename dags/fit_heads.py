"""Airflow: fit_heads_<name> DAGs, scheduled on the feature-set Asset that extract_<name> emits."""

import sys
from pathlib import Path

# Airflow puts the DAG folder on sys.path; a bare DagBag (tests) or a bundle may not.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from tlfs_dags.factory import build_fit_dag
from tlfs_dags.specs import load_specs

for _spec in load_specs().specs:  # a bad spec is dataset_specs.py's import error
    globals()[f"fit_heads_{_spec.name}"] = build_fit_dag(_spec)
