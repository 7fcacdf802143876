"""The DAG factory, in process (no DagBag, no scheduler): the shape of each DAG a spec
makes, and the Params it offers. tests/dags/test_dagbag.py parses the real DAG files."""

import pytest

from tests.dags.conftest import DAGS


@pytest.fixture
def factory(airflow_env, monkeypatch):
    monkeypatch.syspath_prepend(str(DAGS))
    from tlfs_dags import factory, specs

    return factory, specs


def test_a_spec_makes_the_three_dags_with_their_tasks_and_its_defaults(factory):
    factory, specs = factory
    spec = specs.DatasetSpec(name="guitars", sources=["/data/g.zip"], limit=50, views=["flip"], schedule="@weekly",
                             checks=False, bit_depth=12)
    extract, fit, finetune = factory.build_extract_dag(spec), factory.build_fit_dag(spec), factory.build_finetune_dag(spec)
    assert (extract.dag_id, fit.dag_id, finetune.dag_id) == ("extract_guitars", "fit_heads_guitars", "finetune_guitars")
    assert sorted(extract.task_ids) == ["advise", "choose", "commit", "export_backbone", "extract_shard", "finetune_conf",
                                        "heads_only", "plan_shards", "trigger_finetune"]
    assert sorted(finetune.task_ids) == ["commit", "extract_shard", "finetune", "plan_shards"]
    assert sorted(fit.task_ids) == ["feature_set", "fit_heads", "label_issues", "label_next", "learning_curve",
                                    "near_copies", "report", "ship_classifier", "sweep"]
    assert fit.get_task("label_next").upstream_task_ids == {"feature_set", "ship_classifier"}
    assert fit.get_task("near_copies").upstream_task_ids == {"feature_set", "ship_classifier"}  # with the shipped head
    assert fit.get_task("label_issues").upstream_task_ids == {"feature_set", "sweep"}  # on the sweep's layer
    # the page comes last, once the queue and the checks are saved or skipped: a run that fitted nothing has none
    report = fit.get_task("report")
    assert report.upstream_task_ids == {"feature_set", "label_next", "near_copies", "label_issues", "learning_curve"}
    assert report.trigger_rule == "none_failed_min_one_success"
    assert extract.get_task("extract_shard").pool == factory.EXTRACT_POOL
    params = extract.params.dump()
    assert (params["sources"], params["limit"], params["views"], params["bit_depth"]) == (["/data/g.zip"], 50, ["flip"], 12)
    assert finetune.params.dump()["bit_depth"] == 12
    assert fit.params.dump()["checks"] is False  # the spec's key is the param's default
    # fit_heads runs on the Asset the commit emits
    assert [a.name for a in fit.timetable.asset_condition.objects] == ["tlfs_features_guitars"]
    assert [a.name for a in extract.get_task("commit").outlets] == ["tlfs_features_guitars"]


def test_the_shipped_cifar10_spec_builds(factory):
    factory, specs = factory
    (cifar,) = [s for s in specs.load_specs().specs if s.name == "cifar10"]
    assert factory.build_extract_dag(cifar).params.dump()["backbone"] == "efficientnet_lite0"


@pytest.mark.parametrize("large, mode, fine_tune", [
    (True, "auto", True), (False, "auto", False), (True, "never", False), (False, "always", True),
])
def test_after_the_advice_a_large_dataset_goes_on_to_fine_tuning_unless_the_run_says_otherwise(large, mode, fine_tune):
    from tlfs.pipeline.tasks import fine_tune_next

    assert fine_tune_next({"case": "whatever", "size": {"large": large}}, mode) is fine_tune


def test_the_advisors_verdict_on_a_large_dataset_reaches_fine_tuning_under_auto():
    """The advisor's own verdict (1,000 training images per class: large), whether or not
    it could measure the similarity, read as the extract DAG's branch reads it."""
    from tlfs.pipeline.advise import LARGE_IMAGES_PER_CLASS, Thresholds, decide
    from tlfs.pipeline.tasks import fine_tune_next

    layers = ["block2", "block15", "head"]
    for similarity in (0.9, 0.1, None):
        for per_class, large in ((LARGE_IMAGES_PER_CLASS, True), (LARGE_IMAGES_PER_CLASS - 1, False)):
            case, action = decide(per_class, similarity, Thresholds(), None, layers)
            assert (action["do"] == "fine_tune") is large
            assert fine_tune_next({"case": case, "size": {"large": per_class >= LARGE_IMAGES_PER_CLASS}}, "auto") is large


def test_the_operations_guide_names_every_param_of_each_dag(factory):
    """docs/operations.md's bullet for each DAG names each of its Params, as `name`."""
    import re
    from pathlib import Path

    factory, specs = factory
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    spec = specs.DatasetSpec(name="guitars", sources=["/data/g.zip"])
    for dag in (factory.build_extract_dag(spec), factory.build_fit_dag(spec), factory.build_finetune_dag(spec)):
        kind = dag.dag_id.removesuffix("_guitars")
        bullet = re.search(rf"^- \*\*`{kind}_<name>`\*\*(.*?)(?=^- \*\*)", guide, re.S | re.M)
        assert bullet, f"docs/operations.md has no bullet for {kind}_<name>"
        named = set(re.findall(r"`(\w+)`", bullet.group(1)))
        assert set(dag.params.dump()) - named == set(), f"{kind}_<name>'s Params the guide leaves out"
