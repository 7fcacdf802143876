"""What a fit_heads run fits: the version whose commit triggered it, or nothing when
that version was unchanged (its heads stand)."""

from types import SimpleNamespace

import pytest

from tests.dags.conftest import DAGS


@pytest.fixture
def fit_target(airflow_env, monkeypatch):
    monkeypatch.syspath_prepend(str(DAGS))
    from tlfs_dags.factory import fit_target

    return fit_target


PARAMS = {"backbone": "efficientnet_lite0", "store": None}


def event(**extra):
    return SimpleNamespace(extra=extra)


def test_a_run_by_hand_fits_the_params_set_at_its_newest_version(fit_target):
    assert fit_target("cifar10", PARAMS, {}) == {"dataset": "cifar10", "backbone": "efficientnet_lite0", "store": None,
                                                 "version": None}


def test_an_asset_triggered_run_fits_the_version_its_event_names(fit_target):
    events = {"asset": [event(version=1, backbone_version="efficientnet_lite0-aaa", store="s3://old"),
                        event(version=2, backbone_version="efficientnet_lite0-f18dcfbf75", store="s3://tlfs/store")]}
    assert fit_target("cifar10", PARAMS, events) == {"dataset": "cifar10", "backbone": "efficientnet_lite0-f18dcfbf75",
                                                     "store": "s3://tlfs/store", "version": 2}


def test_a_run_triggered_by_an_unchanged_set_is_skipped(fit_target):
    from airflow.sdk.exceptions import AirflowSkipException

    events = {"asset": [event(version=3, unchanged=True, backbone_version="efficientnet_lite0-f18dcfbf75")]}
    with pytest.raises(AirflowSkipException, match="version 3 is unchanged"):
        fit_target("cifar10", PARAMS, events)
