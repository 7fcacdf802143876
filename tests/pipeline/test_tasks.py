"""pipeline/tasks.py: what the DAG tasks call."""

from tlfs.pipeline.tasks import shard_groups


def test_shards_are_grouped_into_at_most_the_allowed_tasks_in_even_consecutive_runs():
    assert shard_groups(list(range(10)), 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert shard_groups(list(range(3)), 512) == [[0], [1], [2]]
    groups = shard_groups(list(range(4000)), 512)  # 10 million images at 2,500 a shard
    assert len(groups) == 512 and sum(groups, []) == list(range(4000)) and {len(g) for g in groups} == {7, 8}
    assert shard_groups([], 512) == []


def test_a_dag_runs_params_become_the_extractions_typed_params():
    from tlfs.pipeline.tasks import ExtractionParams

    params = ExtractionParams.from_params({"sources": ["/d/a.tar"], "layers": None, "models": "/m", "views": ["flip"],
                                           "batch_size": None, "freeze": "2", "incremental": False, "bit_depth": 12})
    assert params == ExtractionParams(sources=("/d/a.tar",), model_store="/m", views=("flip",), incremental=False,
                                      bit_depth=12)
    assert ExtractionParams.from_params({}) == ExtractionParams()  # the finetune DAG's Params lack views, splits...


def test_planning_from_typed_params_names_its_shards_and_what_it_will_do(tmp_path, lite0, models_root):
    from tests.conftest import folder_images, write_tree
    from tlfs.pipeline.tasks import ExtractionParams, plan_extraction

    images = write_tree(tmp_path / "images", folder_images(per_class=2))
    planned = plan_extraction("colours", "efficientnet_lite0", ExtractionParams(
        sources=(str(images),), store=str(tmp_path / "store"), model_store=models_root, shard_size=4), log=lambda *_: None)
    assert planned["images"] == 12 and planned["shard_groups"] == [[n] for n in planned["shards"]]
    assert planned["summary"].startswith("12 images in 4 shards -> ") and planned["summary"].endswith("12 images extracted (nothing reused)")


def test_a_dag_runs_bit_depth_is_its_plans(tmp_path, lite0, models_root):
    from tlfs.pipeline.plan import Plan
    from tlfs.pipeline.tasks import ExtractionParams, plan_extraction
    from tlfs.features.storage import read_json
    from tlfs.features import layout
    from tests.conftest import folder_images, write_tree

    images = write_tree(tmp_path / "images", folder_images(per_class=2))
    planned = plan_extraction("colours", "efficientnet_lite0", ExtractionParams(
        sources=(str(images),), store=str(tmp_path / "store"), model_store=models_root, bit_depth=12), log=lambda *_: None)
    plan = Plan.from_json(read_json(layout.plan_uri(planned["set_uri"], planned["plan_id"])))
    assert plan.bit_depth == 12
