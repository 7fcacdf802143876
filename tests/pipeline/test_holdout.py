"""A test split held out of a source without one (``URI#holdout=F``): a tree of
``<class>/<image>`` in any container, its split chosen image by image, so that it never moves."""

import json
import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.holdout import held_out, holdout_fraction
from tlfs.pipeline.indexing import build_index, iter_payloads
from tests.conftest import folder_images, write_tar, write_tree, write_zip
from tests.pipeline.sources.helpers import write_parquet_table, write_webdataset

CONTAINERS = ("dir", "tar", "tar.gz", "zip")


def classes_tree(per_class: int = 4) -> dict[str, bytes]:
    """``class/file`` -> bytes: the colour dataset's training images without their split folder."""
    return {name.split("/", 1)[1]: data for name, data in folder_images(per_class, splits=("train",)).items()}


def written(tmp_path, kind: str, files: dict[str, bytes], name: str = "d") -> str:
    return str({"dir": lambda: write_tree(tmp_path / name, files),
                "zip": lambda: write_zip(tmp_path / f"{name}.zip", files),
                "tar": lambda: write_tar(tmp_path / f"{name}.tar", files, "w"),
                "tar.gz": lambda: write_tar(tmp_path / f"{name}.tar.gz", files, "w:gz")}[kind]())


@pytest.mark.parametrize("kind", CONTAINERS)
def test_a_tree_of_classes_is_one_split_given_with_the_source(tmp_path, kind):
    files = classes_tree()
    uri = written(tmp_path, kind, files)
    index = build_index("colors", [f"{uri}#split=train"])
    assert sorted(e.image_id for e in index.entries) == sorted(f"train/{name}" for name in files)
    assert index.classes == ["blue", "green", "red"] and index.splits() == ["train"]
    assert {e.image_id: p for e, p in iter_payloads(index.sources, index.entries)} == {f"train/{k}": v for k, v in files.items()}
    assert index.sources[0].options == {"split": "train"}


@pytest.mark.parametrize("kind", CONTAINERS)
def test_a_tree_of_classes_wrapped_in_one_folder_is_the_same_tree(tmp_path, kind):
    """`zip -r guitars.zip guitars` makes guitars/acoustic/1.jpg: the images are the tree's."""
    files = classes_tree()
    plain = build_index("colors", [f"{written(tmp_path, kind, files, 'plain')}#holdout=0.3"])
    wrapped = build_index("colors", [f"{written(tmp_path, kind, {f'guitars/{k}': v for k, v in files.items()}, 'w')}"
                                     "#holdout=0.3"])
    assert [e.image_id for e in wrapped.entries] == [e.image_id for e in plain.entries]


@pytest.mark.parametrize("kind", CONTAINERS)
def test_holdout_moves_the_images_its_hash_chooses_to_test_and_keeps_every_image(tmp_path, kind):
    files = classes_tree(per_class=40)
    index = build_index("colors", [f"{written(tmp_path, kind, files)}#holdout=0.25"])
    by_id = {e.image_id: e for e in index.entries}
    assert sorted(i.split("/", 1)[1] for i in by_id) == sorted(files)  # every image, once
    for image_id, entry in by_id.items():
        assert entry.split == image_id.split("/")[0] == ("test" if held_out(image_id, 0.25) else "train")
    per_split = Counter(e.split for e in index.entries)
    assert 0.15 < per_split["test"] / len(files) < 0.35 and per_split["train"] > 0
    assert set(Counter((e.split, e.label_name) for e in index.entries)) == {  # every class on both sides
        (split, name) for split in ("train", "test") for name in ("blue", "green", "red")}
    payloads = {e.image_id.split("/", 1)[1]: p for e, p in iter_payloads(index.sources, index.entries)}
    assert payloads == files


def test_an_images_split_never_changes_as_images_are_added_or_removed(tmp_path):
    """The choice is the image's own: a second version tests on the images the first did."""
    files = classes_tree(per_class=30)
    first = {e.image_id for e in build_index("c", [f"{written(tmp_path, 'dir', files, 'a')}#holdout=0.2"]).entries}
    more = {**{k: v for k, v in list(files.items())[::2]}, **{f"red/new{n}.png": b"x" for n in range(40)}}
    second = {e.image_id for e in build_index("c", [f"{written(tmp_path, 'dir', more, 'b')}#holdout=0.2"]).entries}
    kept = {image_id.split("/", 1)[1] for image_id in second} & {image_id.split("/", 1)[1] for image_id in first}
    assert len(kept) == len(files) // 2
    assert {i for i in first if i.split("/", 1)[1] in kept} == {i for i in second if i.split("/", 1)[1] in kept}


def test_the_choice_is_by_class_and_file_not_by_the_split_it_came_from():
    assert all(held_out(f"train/c/{n}.jpg", 0.3) == held_out(f"other/c/{n}.jpg", 0.3) for n in range(200))
    assert sum(held_out(f"train/c/{n}.jpg", 0.3) for n in range(2000)) in range(500, 700)
    assert not any(held_out(f"train/c/{n}.jpg", 1e-9) for n in range(200))


@pytest.mark.parametrize("text, fraction", [("0.2", 0.2), ("20%", 0.2), ("0.05", 0.05), ("99.5%", 0.995)])
def test_a_holdout_is_a_fraction_or_a_percentage(text, fraction):
    assert holdout_fraction("u", text) == pytest.approx(fraction)


@pytest.mark.parametrize("text", ["0", "1", "1.5", "-0.1", "120%", "a fifth", "nan"])
def test_a_holdout_that_is_no_fraction_between_0_and_1_is_refused_before_anything_is_read(tmp_path, text):
    from tlfs.pipeline.indexing import check_sources

    uri = f"{written(tmp_path, 'dir', classes_tree())}#holdout={text}"
    with pytest.raises(SourceError, match=rf"holdout={text} is not a fraction of the images between 0 and 1"):
        check_sources("c", [uri])
    with pytest.raises(SourceError, match="is not a fraction"):
        build_index("c", [uri])


@pytest.mark.parametrize("splits", [("train", "test"), ("test",)])
def test_a_source_with_a_test_split_already_is_told_to_go_without_holdout(tmp_path, splits):
    """A tree of split/class/file given with holdout is not read as one of classes, even where
    its one folder would pass for a wrapper (test/cats/1.jpg): the error says what is meant."""
    uri = written(tmp_path, "tar.gz", folder_images(splits=splits))
    with pytest.raises(SourceError, match=r"no images found in .* \(expected <class>/<image>, .*: the tree is to be "
                                          r"<class>/<image> where its split is given .*; a tree of <split>/<class>/<image> "
                                          r"is given without them"):
        build_index("c", [f"{uri}#holdout=0.2"])
    table = write_parquet_table(tmp_path / "t.parquet", folder_images(), ["blue", "green", "red"])
    with pytest.raises(SourceError, match="has a test split already: give it without holdout"):
        build_index("c", [f"{table}#holdout=0.2"])


def test_a_parquet_table_and_webdataset_samples_of_train_images_hold_out_a_test_split_too(tmp_path):
    train = folder_images(per_class=30, splits=("train",))
    table = write_parquet_table(tmp_path / "t.parquet", train, ["blue", "green", "red"])
    samples = write_webdataset(tmp_path / "w.tar", train)  # keys train/<class>-<file> with .json labels
    unnamed = write_webdataset(tmp_path / "u.tar", train, split_folder=False)  # keys <class>-<file>: no split named
    bare = tmp_path / "images.parquet"  # no split column, no split in its name
    pq.write_table(pq.read_table(table).drop_columns(["split"]), bare)
    for uri in (str(table), str(samples), str(unnamed), str(bare)):
        index = build_index("c", [f"{uri}#holdout=0.2"])
        assert index.splits() == ["test", "train"] and len(index.entries) == 90
        assert all(e.split == ("test" if held_out(e.image_id, 0.2) else "train") for e in index.entries)


def test_labels_beside_the_images_make_webdataset_samples_and_a_json_file_of_the_trees_own_does_not(tmp_path):
    """``train/0001.jpg`` beside ``train/0001.json`` is a sample keyed in a folder, not the class
    "train" of a tree: labels beside the images make the archive a WebDataset's."""
    samples = write_webdataset(tmp_path / "w.tar", folder_images(splits=("train",)))
    index = build_index("c", [f"{samples}#split=val"])
    assert index.splits() == ["val"] and index.classes == ["blue", "green", "red"]
    assert index.sources[0].format == "webdataset-tar"
    # a tree of classes with a JSON file of its own beside them (no image's label) stays a tree
    tree = write_tar(tmp_path / "t.tar", {**classes_tree(), "info.json": b'{"label": "x"}'}, "w")
    index = build_index("c", [f"{tree}#holdout=0.3"])
    assert index.sources[0].format == "imagefolder-tar" and len(index.entries) == 12 and not index.rejects


@pytest.mark.parametrize("kind", CONTAINERS)
def test_options_an_image_folder_tree_does_not_take_are_named(tmp_path, kind):
    with pytest.raises(SourceError, match=r"options label do not apply to an image-folder tree \(it takes split and holdout\)"):
        build_index("c", [f"{written(tmp_path, kind, folder_images())}#label=x"])


def test_a_link_refused_while_indexing_goes_to_the_split_its_image_would(tmp_path):
    files = classes_tree(per_class=20)
    root = write_tree(tmp_path / "d", files)
    for n in range(20):
        os.symlink(root / "red" / "000.png", root / "red" / f"link{n}.png")
    index = build_index("c", [f"{root}#holdout=0.3"])
    assert len(index.rejects) == 20 and {r.image_id.split("/")[0] for r in index.rejects} == {"train", "test"}
    assert all(r.image_id.split("/")[0] == ("test" if held_out(r.image_id, 0.3) else "train") for r in index.rejects)


def test_the_source_and_its_holdout_are_in_the_lineage_and_describe_shows_them(tmp_path, lite0, models_root, capsys):
    from tlfs.pipeline.cli import main

    uri = f"{write_tree(tmp_path / 'guitars', classes_tree(per_class=10))}#holdout=0.3"
    store = str(tmp_path / "store")
    assert main(["extract", "--dataset", "guitars", "--source", uri, "--store", store, "--models", models_root,
                 "--no-progress"]) in (0, None)
    assert main(["describe", "--dataset", "guitars", "--store", store]) in (0, None)
    shown = capsys.readouterr().out
    assert f"source        {uri}  [imagefolder-dir]  30 images" in shown
    assert main(["describe", "--dataset", "guitars", "--store", store, "--json"]) in (0, None)
    info = json.loads(capsys.readouterr().out)
    assert info["lineage"]["sources"][0]["options"] == {"holdout": "0.3"}
    assert set(info["counts"]) == {"train", "test"}
