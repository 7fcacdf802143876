"""The features of a pool of unlabelled images kept beside a set: found again by an image's URI
and fingerprint only, the float16 values as written, a stale pool trimmed, and an unreadable
file an empty cache with its reason, never an error."""

import numpy as np

from tlfs.features.pool_cache import pool_uri, read_pool, write_pool


def _rows(count: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, width)).astype(np.float16)


def test_an_image_is_found_again_by_its_uri_and_fingerprint_with_the_values_written(tmp_path):
    uri = pool_uri(str(tmp_path / "set"), "original", ["block15"], "decode rule", "fp32")
    empty, reason = read_pool(uri, 4)
    assert reason is None and not empty.rows
    rows = _rows(3, 4, 0)
    assert write_pool(empty, ["a.jpg", "b.jpg", "c.jpg"], ["stat:1:1", "stat:2:1", "stat:3:1"], rows) == 3
    cache, reason = read_pool(uri, 4)
    assert reason is None
    keys = [("b.jpg", "stat:2:1"), ("a.jpg", "stat:1:2"), ("d.jpg", "stat:1:1"), ("a.jpg", "stat:1:1")]
    assert cache.holds(keys).tolist() == [True, False, False, True]
    assert np.array_equal(cache.features([keys[0], keys[3]]), rows[[1, 0]].astype(np.float32))


def test_an_image_rewritten_replaces_its_row_and_the_others_stay(tmp_path):
    uri = pool_uri(str(tmp_path / "set"), "flip", ["block14", "head"], "decode rule", "fp16")
    empty, _ = read_pool(uri, 4)
    first, second = _rows(2, 4, 1), _rows(2, 4, 2)
    write_pool(empty, ["a.jpg", "b.jpg"], ["etag:1", "etag:2"], first)
    cache, _ = read_pool(uri, 4)
    write_pool(cache, ["a.jpg", "c.jpg"], ["etag:9", "etag:3"], second)
    cache, _ = read_pool(uri, 4)
    assert sorted(cache.rows) == [("a.jpg", "etag:9"), ("b.jpg", "etag:2"), ("c.jpg", "etag:3")]
    assert np.array_equal(cache.features([("a.jpg", "etag:9"), ("b.jpg", "etag:2")]),
                          np.vstack([second[0], first[1]]).astype(np.float32))


def test_an_image_no_round_lists_goes_once_it_was_run_long_enough_ago(tmp_path):
    uri = pool_uri(str(tmp_path / "set"), "original", ["head"], "decode rule", "fp32")
    day = 86400
    cache, _ = read_pool(uri, 2)
    write_pool(cache, ["old/0.jpg", "old/1.jpg"], ["f", "f"], _rows(2, 2, 3), now=0)  # a pool since labelled
    cache, _ = read_pool(uri, 2)
    write_pool(cache, ["old/1.jpg", "new/0.jpg"], ["g", "f"], _rows(2, 2, 4), now=10 * day)  # old/1.jpg run again
    cache, _ = read_pool(uri, 2)
    # a look at one image, within the 30 days: every other image stays
    write_pool(cache, ["one.jpg"], ["f"], _rows(1, 2, 5), listed={"one.jpg"}, now=30 * day)
    cache, _ = read_pool(uri, 2)
    assert sorted(image for image, _ in cache.rows) == ["new/0.jpg", "old/0.jpg", "old/1.jpg", "one.jpg"]
    # a round a day later: old/0.jpg, run 31 days ago and not listed, goes; what it lists stays whatever its age
    write_pool(cache, ["two.jpg"], ["f"], _rows(1, 2, 6), listed={"two.jpg", "new/0.jpg"}, now=31 * day)
    cache, _ = read_pool(uri, 2)
    assert sorted(image for image, _ in cache.rows) == ["new/0.jpg", "old/1.jpg", "one.jpg", "two.jpg"]
    write_pool(cache, ["three.jpg"], ["f"], _rows(1, 2, 7), listed={"three.jpg"}, now=45 * day)
    cache, _ = read_pool(uri, 2)
    assert sorted(image for image, _ in cache.rows) == ["one.jpg", "three.jpg", "two.jpg"]


def test_each_view_layers_decoding_and_precision_has_a_file_of_its_own(tmp_path):
    made = {pool_uri("s3://b/set", view, layers, rule, precision)
            for view in ("original", "flip") for layers in (["head"], ["block15"], ["block15", "head"])
            for rule in ("rule 1", "rule 2") for precision in ("fp32", "fp16")}
    assert len(made) == 24 and all(uri.startswith("s3://b/set/_pool/") for uri in made)
    int8 = {pool_uri("s3://b/set", "original", ["head"], "rule 1", "int8", graph) for graph in ("a" * 64, "b" * 64)}
    assert len(int8) == 2 and not int8 & made  # two int8 graphs (two model stores' quantizations) never share a file
    # an fp32 or fp16 set's file is where it always was: keyed by the decoding rule and the precision alone
    from tlfs.features.pool_cache import KEY_DIGITS
    from tlfs.features.storage import digest_of

    key = digest_of({"decode": "rule 1", "precision": "fp16"}, KEY_DIGITS)
    assert pool_uri("s3://b/set", "original", ["head"], "rule 1", "fp16") == f"s3://b/set/_pool/original-head-{key}.parquet"


def test_an_unreadable_file_or_one_of_other_widths_is_an_empty_cache_with_its_reason(tmp_path):
    uri = pool_uri(str(tmp_path / "set"), "original", ["head"], "decode rule", "fp32")
    cache, _ = read_pool(uri, 4)
    write_pool(cache, ["a.jpg"], ["f"], _rows(1, 4, 5))
    other, reason = read_pool(uri, 8)
    assert not other.rows and reason == "it holds 4 values an image, not 8"
    (tmp_path / "set" / "_pool").joinpath(uri.rsplit("/", 1)[1]).write_bytes(b"PAR1 cut short")
    broken, reason = read_pool(uri, 4)
    assert not broken.rows and reason.startswith("ArrowInvalid")
