"""Airflow: extract_<name> DAGs, one per dataset spec in dags/datasets/*.yaml (extract_cifar10 first)."""

import sys
from pathlib import Path

# Airflow puts the DAG folder on sys.path; a bare DagBag (tests) or a bundle may not.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from tlfs_dags.factory import build_extract_dag
from tlfs_dags.specs import load_specs

for _spec in load_specs().specs:  # a bad spec is dataset_specs.py's import error
    globals()[f"extract_{_spec.name}"] = build_extract_dag(_spec)
