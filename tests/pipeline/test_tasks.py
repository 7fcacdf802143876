"""pipeline/tasks.py: what the DAG tasks call."""

from tlfs.pipeline.tasks import shard_groups


def test_shards_are_grouped_into_at_most_the_allowed_tasks_in_even_consecutive_runs():
    assert shard_groups(list(range(10)), 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert shard_groups(list(range(3)), 512) == [[0], [1], [2]]
    groups = shard_groups(list(range(4000)), 512)  # 10 million images at 2,500 a shard
    assert len(groups) == 512 and sum(groups, []) == list(range(4000)) and {len(g) for g in groups} == {7, 8}
    assert shard_groups([], 512) == []
