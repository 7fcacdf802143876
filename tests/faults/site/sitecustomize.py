"""Put this folder on PYTHONPATH to arm fault injection in every Python process
(see tests/faults/__init__.py); without its environment variables it does nothing."""

import os

if os.environ.get("TLFS_FAULT_LOG") or os.environ.get("TLFS_KILL_AT") or os.environ.get("TLFS_STOP_AT") \
        or os.environ.get("TLFS_FULL_AT"):
    from tests.faults import install

    install()
