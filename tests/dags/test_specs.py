"""Dataset spec files (dags/datasets/*.yaml): each is checked on its own, and a bad one
is an error naming the file, the line, the key and what is allowed."""

import sys
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS

sys.path.insert(0, str(DAGS))
from tlfs_dags.specs import DatasetSpec, SpecError, load_spec, load_specs  # noqa: E402

GOOD = "name: flowers\nsources: [s3://bucket/flowers.tar]\n"

# spec text -> (line, what the message must say)
BAD_SPECS = {
    "syntax": ("name: flowers\nsources: [a\nlimit: 3\n", 3, "not valid YAML"),
    "unknown_key": (GOOD + "limt: 3\n", 3, "key 'limt': unknown key; known: name, description, sources"),
    "limit_text": (GOOD + "limit: abc\n", 3, "key 'limit': expected null or an integer > 0, got 'abc'"),
    "limit_zero": (GOOD + "limit: 0\n", 3, "key 'limit': expected null or an integer > 0, got 0"),
    "limit_bool": (GOOD + "limit: true\n", 3, "key 'limit'"),
    "views": (GOOD + "views: [rotate]\n", 3, "key 'views': expected a list of views from: flip, got ['rotate']"),
    "backbone": (GOOD + "backbone: resnet51\n", 3, "key 'backbone': expected one of efficientnet_lite0, resnet50"),
    "schedule": (GOOD + "schedule: every monday\n", 3, "key 'schedule': expected null, a preset (@once"),
    "cron": (GOOD + "schedule: '61 * * * *'\n", 3, "key 'schedule'"),
    "name": ("name: Flowers!\nsources: [a]\n", 1, "key 'name': expected lowercase letters, digits and '_'"),
    "layers": (GOOD + "layers: head\n", 3, "key 'layers': expected null (all) or a list of tap layer names, got 'head'"),
    "sources_empty": ("name: flowers\nsources: []\n", 2, "key 'sources': expected a list of source URIs (only cifar10"),
    "balanced": (GOOD + "balanced: yes please\n", 3, "key 'balanced': expected true or false, got 'yes please'"),
    "unlabelled": (GOOD + "unlabelled: /data/incoming\n", 3, "key 'unlabelled': expected a list of image files, folders "
                   "or globs, got '/data/incoming'"),
    "label_next": (GOOD + "label_next: 0\n", 3, "key 'label_next': expected an integer > 0, got 0"),
    "checks": (GOOD + "checks: off please\n", 3, "key 'checks': expected true or false, got 'off please'"),
    "bit_depth": (GOOD + "bit_depth: 20\n", 3, "key 'bit_depth': expected null or an integer from 8 to 16, got 20"),
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_bad_spec_is_an_error_naming_the_file_line_key_and_what_is_allowed(tmp_path, case):
    text, line, message = BAD_SPECS[case]
    path = write(tmp_path, "flowers.yaml", text)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert str(raised.value).startswith(f"{path}:{line}: "), str(raised.value)
    assert message in str(raised.value)


def test_a_spec_without_name_or_sources_says_which_key_is_required(tmp_path):
    with pytest.raises(SpecError, match=r"flowers.yaml: key 'name' is required"):
        load_spec(write(tmp_path, "flowers.yaml", "sources: [a]\n"))
    with pytest.raises(SpecError, match=r"flowers.yaml: key 'sources' is required"):
        load_spec(write(tmp_path, "flowers.yaml", "name: flowers\n"))
    with pytest.raises(SpecError, match=r"flowers.yaml: a spec is a mapping"):
        load_spec(write(tmp_path, "flowers.yaml", "- name: flowers\n"))


def test_a_good_spec_loads_with_its_values_and_defaults(tmp_path):
    spec = load_spec(write(tmp_path, "guitars.yaml", "name: guitars\nsources: [/data/g.zip]\nlimit: 50\n"
                           "views: [flip]\nschedule: '0 3 * * 1'\nlayers: [block7, head]\n"))
    assert (spec.name, spec.sources, spec.limit, spec.views, spec.schedule, spec.layers) == \
        ("guitars", ["/data/g.zip"], 50, ["flip"], "0 3 * * 1", ["block7", "head"])
    assert spec.backbone == "efficientnet_lite0" and spec.splits is None and spec.balanced is False
    assert load_spec(write(tmp_path, "slides.yaml", "name: slides\nsources: [/data/s.zip]\nbalanced: true\n")).balanced
    assert load_spec(write(tmp_path, "cifar10.yaml", "name: cifar10\nschedule: '@weekly'\n")).sources == []
    assert (spec.unlabelled, spec.label_next) == ([], 100)
    queued = load_spec(write(tmp_path, "pets.yaml", "name: pets\nsources: [/data/p]\nunlabelled: [/data/incoming]\n"
                             "label_next: 250\n"))
    assert (queued.unlabelled, queued.label_next) == (["/data/incoming"], 250)
    assert spec.checks is True  # fit_heads checks near-copies and labels unless a spec says not
    assert load_spec(write(tmp_path, "huge.yaml", "name: huge\nsources: [/data/h]\nchecks: false\n")).checks is False
    assert spec.bit_depth is None
    assert load_spec(write(tmp_path, "cells.yaml", "name: cells\nsources: [/data/c]\nbit_depth: 12\n")).bit_depth == 12


def test_the_specs_label_next_default_is_the_commands():
    from tlfs.pipeline.label_next import DEFAULT_COUNT

    assert DatasetSpec(name="x").label_next == DEFAULT_COUNT


def test_one_bad_file_costs_only_its_own_dataset(tmp_path):
    write(tmp_path, "a_guitars.yaml", "name: guitars\nsources: [/data/g.zip]\n")
    write(tmp_path, "b_flowers.yaml", "name: flowers\nsources: [a\n")
    write(tmp_path, "c_birds.yaml", "name: birds\nsources: [/data/b.zip]\n")
    loaded = load_specs(tmp_path)
    assert [s.name for s in loaded.specs] == ["guitars", "birds"]
    assert len(loaded.errors) == 1 and "b_flowers.yaml:3: not valid YAML" in str(loaded.errors[0])


def test_two_files_with_one_name_keep_the_first(tmp_path):
    write(tmp_path, "a.yaml", "name: guitars\nsources: [/data/g.zip]\n")
    write(tmp_path, "b.yaml", "name: guitars\nsources: [/data/h.zip]\n")
    loaded = load_specs(tmp_path)
    assert [s.path for s in loaded.specs] == [str(tmp_path / "a.yaml")]
    assert "b.yaml: key 'name': 'guitars' is already the name in" in str(loaded.errors[0])


def test_the_shipped_specs_are_valid():
    loaded = load_specs()
    assert loaded.errors == [] and "cifar10" in [s.name for s in loaded.specs]
    example = DAGS / "datasets" / "example_flowers.yaml.example"
    assert load_spec(example).name == "flowers"


def test_a_spec_may_name_any_timm_model_or_a_lite_size(tmp_path):
    for backbone in ("timm/convnext_tiny", "timm/vit_small_patch14_dinov2.lvd142m", "efficientnet_lite2_2x2"):
        assert load_spec(write(tmp_path, "guitars.yaml", f"{GOOD}backbone: {backbone}\n")).backbone == backbone
    with pytest.raises(SpecError, match="or timm/<model>"):
        load_spec(write(tmp_path, "guitars.yaml", f"{GOOD}backbone: timm/../etc\n"))
