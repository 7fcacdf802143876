"""Airflow: the import error of every bad dataset spec in dags/datasets/*.yaml.

The DAG files extract.py, fit_heads.py and finetune.py build DAGs from the good specs
only, so one bad file never takes another dataset's DAGs down; this file defines no DAG
and fails to import, naming each bad file, its line, the key and what is allowed, so the
error shows among Airflow's import errors (UI, `airflow dags list-import-errors`).
"""

import sys
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from tlfs_dags.specs import SpecError, load_specs

_errors = load_specs().errors
if _errors:
    raise SpecError("\n".join(str(e) for e in _errors))
