"""pipeline/inference.py: batches cut out of the decoded blocks, and a shard's blocks."""

import numpy as np
import pytest

from tlfs.pipeline.decode_pool import Decoded, DecodedBlock
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.inference import MAX_OPEN_BUCKETS, Batcher, shard_blocks


def images_of(shape: tuple, first: int, rows: int) -> np.ndarray:
    """``rows`` images of ``shape`` whose pixels all hold their position (mod 256)."""
    return np.stack([np.full(shape, (first + n) % 256, np.uint8) for n in range(rows)])


def cut(batch_size: int, runs: list[tuple[tuple, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The batches a Batcher makes of ``runs`` (a shape and how many images of it, in order)."""
    made = []
    batcher = Batcher(batch_size, lambda bucket: made.append(bucket.joined()))
    position = 0
    for shape, rows in runs:
        batcher.add(np.arange(position, position + rows), images_of(shape, position, rows))
        position += rows
    batcher.flush_all()
    return made


def test_batches_of_one_shape_are_consecutive_images_cut_out_of_blocks_and_joined_across_them():
    shape = (8, 8, 3)
    blocks = [images_of(shape, 0, 5), images_of(shape, 5, 7), images_of(shape, 12, 3)]
    made = []
    batcher = Batcher(4, lambda bucket: made.append(bucket.joined()))
    start = 0
    for block in blocks:
        batcher.add(np.arange(start, start + len(block)), block)
        start += len(block)
    batcher.flush_all()
    assert [list(positions) for positions, _ in made] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]]
    for positions, images in made:  # each image is the one at its position
        assert images.shape == (len(positions), *shape) and [int(i[0, 0, 0]) for i in images] == list(positions)
    assert np.shares_memory(made[0][1], blocks[0])  # inside one block: its rows as they are, no copy
    assert not np.shares_memory(made[1][1], blocks[1])  # across two: joined


def per_image(batch_size: int, runs: list[tuple[tuple, int]]) -> list[list[int]]:
    """The rule the batcher keeps, image by image: an image joins its shape's batch, which
    goes when full; a shape beyond MAX_OPEN_BUCKETS sends the fullest batch first."""
    buckets: dict[tuple, list[int]] = {}
    made = []
    position = 0
    for shape, rows in runs:
        for _ in range(rows):
            bucket = buckets.setdefault(shape, [])
            bucket.append(position)
            position += 1
            if len(bucket) >= batch_size:
                made.append(buckets.pop(shape))
            elif len(buckets) > MAX_OPEN_BUCKETS:
                made.append(buckets.pop(max(buckets, key=lambda k: len(buckets[k]))))
    made.extend(buckets.values())
    return made


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_the_batches_are_those_of_the_image_by_image_rule_whatever_the_shapes(batch_size):
    rng = np.random.default_rng(batch_size)
    shapes = [(4 + n, 4, 3) for n in range(MAX_OPEN_BUCKETS + 3)]  # more shapes than may wait at once
    runs = [(shapes[int(rng.integers(len(shapes)))], int(rng.integers(1, 150))) for _ in range(60)]
    made = cut(batch_size, runs)
    assert [list(positions) for positions, _ in made] == per_image(batch_size, runs)
    assert all(len({image.shape for image in images}) == 1 for _, images in made)


def block(start: int, rows: int) -> DecodedBlock:
    images = Decoded.of([(np.zeros((2, 2, 3), np.uint8), None)] * rows)
    return DecodedBlock(start, [f"e{start + n}" for n in range(rows)], images)


def test_a_shards_blocks_are_the_next_ones_up_to_its_last_entry():
    stream = iter([block(0, 3), block(3, 2), block(5, 4)])
    assert [b.start for b in shard_blocks(stream, 5)] == [0, 3]
    assert [b.start for b in shard_blocks(stream, 4)] == [5]
    assert list(shard_blocks(stream, 0)) == []
    with pytest.raises(PipelineError, match="ended 2 images before"):
        list(shard_blocks(iter([block(0, 3)]), 5))
    with pytest.raises(PipelineError, match="ran 1 images past"):
        list(shard_blocks(iter([block(0, 3)]), 2))
