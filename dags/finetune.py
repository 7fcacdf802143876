"""Airflow: finetune_<name> DAGs (fine-tune, export a new version, extract with it); triggered by extract_<name> for large datasets."""

import sys
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from tlfs_dags.factory import build_finetune_dag
from tlfs_dags.specs import load_specs

for _spec in load_specs().specs:  # a bad spec is dataset_specs.py's import error
    globals()[f"finetune_{_spec.name}"] = build_finetune_dag(_spec)
