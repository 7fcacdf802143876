"""``tlfs label-issues``: labels that look wrong. Each image is classified by a head that
never saw it (out of fold on the training split, by a head fitted on train for another
split), and confident learning flags the images whose label that head doubts, the least
likely label first: images filed under the wrong class are found, and well-labelled ones
are left alone."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlfs import features
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.label_issues import (ISSUE_COLUMNS, LabelIssuesRequest, find_label_issues, label_issue_indices,
                                        out_of_fold_proba)
from tests.conftest import noisy_images, report_section, write_tree
from tests.extraction import run_extract

QUIET = {"log": lambda *_: None}
# images filed under another class than the colour of their disc: (where it is filed, the image it is)
MISFILED = {"train/green/900.png": "train/red/000.png", "train/red/901.png": "train/blue/001.png",
            "test/blue/902.png": "test/green/002.png"}
PER_CLASS = 12


def blobs(per_class: int, classes: int, width: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows around one centre a class (``spread``: their scatter), and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, width)) * 3
    y = np.repeat(np.arange(classes), per_class)
    return (centres[y] + rng.normal(size=(len(y), width)) * spread).astype(np.float32), y


def doubted(X: np.ndarray, y: np.ndarray, classes: int, head: str = "softmax", folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    proba = out_of_fold_proba({"original": (X, y, np.arange(len(y)).astype(object))}, classes, head, folds, None,
                              lambda *_: None)
    return label_issue_indices(y, proba), proba


def flipped_blobs(count: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Four classes of 120 feature rows, ``count`` of their labels moved to another class:
    ``(X, true labels, given labels, which were moved)``."""
    X, y = blobs(per_class=120, classes=4, width=16, spread=1.5)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y), count, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 4, len(flipped))) % 4
    return X, y, noisy, flipped


@pytest.mark.parametrize("head", ["softmax", "mlp"])
def test_labels_flipped_at_random_are_found_and_few_others_are_doubted(head):
    X, y, noisy, flipped = flipped_blobs()
    found, _ = doubted(X, noisy, 4, head)
    # confident learning is cautious: it flags what the held-out head is surer of than the
    # class's own images are on average (17 and 19 of the 24 here, none labelled right)
    assert len(np.intersect1d(found, flipped)) >= 15  # of 24
    assert len(np.setdiff1d(found, flipped)) <= 3  # of 456 labelled right
    assert len(doubted(X, y, 4, head)[0]) <= 3  # nothing flipped: next to nothing doubted


def test_each_image_is_classified_by_a_head_that_never_saw_it():
    """Features that carry nothing of the label: a head that had seen an image could learn
    its label by heart, one that had not agrees with the labels by chance only."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(300, 400)).astype(np.float32), np.repeat(np.arange(3), 100)
    _, proba = doubted(X, y, 3)
    assert abs((proba.argmax(1) == y).mean() - 1 / 3) < 0.1
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)


def test_the_least_likely_label_comes_first():
    X, _, noisy, flipped = flipped_blobs()
    found, proba = doubted(X, noisy, 4)
    assert found[0] in flipped and (np.diff(proba[found, noisy[found]]) >= 0).all()
    assert proba[found, noisy[found]].max() < np.median(proba[np.arange(len(noisy)), noisy])


def test_a_class_no_image_is_labelled_with_takes_no_part():
    X, y = blobs(per_class=80, classes=3, width=8, spread=1.0)
    noisy = y.copy()
    noisy[7] = 1
    proba = np.zeros((len(y), 5))  # five classes, two of them no image's label
    proba[:, :3] = out_of_fold_proba({"original": (X, noisy, np.arange(len(y)).astype(object))}, 3, "softmax", 5, None,
                                     lambda *_: None)
    assert list(label_issue_indices(noisy, proba)[:1]) == [7]
    assert len(label_issue_indices(np.zeros(10, np.int64), np.ones((10, 2)) / 2)) == 0  # one class: nothing to doubt


@pytest.fixture(scope="module")
def misfiled_set(tmp_path_factory, lite0, models_root):
    """Noisy images of three colours (12 a class and split), three of them filed under the wrong
    colour, with the flipped view."""
    root = tmp_path_factory.mktemp("label-issues")
    files = noisy_images(per_class=PER_CLASS)
    for filed, image in MISFILED.items():
        files[filed] = files.pop(image)
    source = write_tree(root / "images", files)
    store = str(root / "store")
    run_extract("noisy", [str(source)], "efficientnet_lite0", store, models_root, views=("flip",), show_progress=False,
                **QUIET)
    return features.open_set("noisy", "efficientnet_lite0", store=store), files, store


def test_images_filed_under_the_wrong_class_are_flagged_and_no_others(misfiled_set):
    _, _, store = misfiled_set
    issues, summary = find_label_issues(LabelIssuesRequest("noisy", "efficientnet_lite0", store=store), **QUIET)
    assert list(issues.columns) == ISSUE_COLUMNS and list(issues["rank"]) == [1, 2] and issues["flagged"].all()
    assert sorted(issues["image_id"]) == ["train/green/900.png", "train/red/901.png"]
    assert list(issues["suggested"]) == [MISFILED[i].split("/")[1] for i in issues["image_id"]]  # the colour it is
    assert (issues["label_probability"] < 0.2).all() and (issues["suggested_probability"] > 0.5).all()
    assert issues["label_probability"].is_monotonic_increasing and set(issues["split"]) == {"train"}
    assert summary["images"] == 3 * PER_CLASS and summary["issues"] == 2 and summary["folds"] == 5
    assert summary["held_out_accuracy"] >= 0.9  # the held-out heads agree with the labels but the misfiled and one
    assert summary["commonest"] == {"green -> red": 1, "red -> blue": 1} and summary["views"] == ["original", "flip"]
    original_only, _ = find_label_issues(LabelIssuesRequest("noisy", "efficientnet_lite0", views=("original",),
                                                            store=store), **QUIET)
    assert sorted(original_only["image_id"]) == sorted(issues["image_id"])


def test_another_split_is_classified_by_a_head_fitted_on_train_and_every_image_can_be_ranked(misfiled_set):
    _, _, store = misfiled_set
    ranked, summary = find_label_issues(LabelIssuesRequest("noisy", "efficientnet_lite0", split="test", every=True,
                                                           store=store), **QUIET)
    assert len(ranked) == 3 * PER_CLASS and list(ranked["rank"]) == list(range(1, 3 * PER_CLASS + 1))
    assert ranked["label_probability"].is_monotonic_increasing and summary["folds"] is None
    first = ranked.iloc[0]
    assert (first.image_id, first.suggested) == ("test/blue/902.png", "green")
    # confident learning flags a label only where the head is surer of the other class than
    # of that class's own images on average: one misfiled image against a head fitted on two
    # others is not, and is found first all the same
    assert first.label_probability < 0.5 * ranked["label_probability"].iloc[1]
    assert summary["issues"] == int(ranked["flagged"].sum())


def test_what_cannot_be_checked_is_told(misfiled_set):
    _, _, store = misfiled_set

    def check(**options):
        return find_label_issues(LabelIssuesRequest("noisy", "efficientnet_lite0", store=store, **options), **QUIET)

    with pytest.raises(PipelineError, match="needs 13 train images of each class; .*red \\(12\\)"):
        check(folds=13)
    with pytest.raises(PipelineError, match="folds 1: cross-validation needs at least 2"):
        check(folds=1)
    with pytest.raises(PipelineError, match="has no layer 'block99'; it has block2, .*head"):
        check(layers=("block99",))
    with pytest.raises(PipelineError, match="has no split 'validation'; it has test, train"):
        check(split="validation")
    with pytest.raises(PipelineError, match="has no 'rotated' view; it has original, flip"):
        check(views=("rotated",))


def test_the_command_prints_the_doubtful_labels_writes_them_and_draws_them(misfiled_set, tmp_path, capsys):
    from tlfs.pipeline.image_sheet import BETWEEN, CAPTION, THUMB, TITLE

    _, files, store = misfiled_set
    table, sheet = tmp_path / "issues.parquet", tmp_path / "issues.png"
    assert main(["label-issues", "--dataset", "noisy", "--store", store, "--layer", "block15,head", "--show", "1",
                 "--output", str(table), "--sheet", str(sheet)]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = json.loads(out[-1])
    assert out[0].startswith(f"{summary['issues']} of 36 train labels look wrong (")
    assert out[1].split()[0] == "1" and out[1].split()[1] in MISFILED and not out[1].endswith("(not flagged)")
    assert len(out) == 3 and summary["layers"] == ["block15", "head"]
    written = pd.read_parquet(table)
    assert list(written.columns) == ISSUE_COLUMNS and len(written) == summary["issues"]
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    assert pixels.shape == (TITLE + THUMB + 2 * CAPTION, 10 * (THUMB + BETWEEN), 3)  # a caption of two lines
    # the first image read again from its source: 48 x 40 pixels drawn twice as large, centred
    original = Image.open(io.BytesIO(files[written["image_id"].iloc[0]])).convert("RGB").resize((96, 80), Image.Resampling.NEAREST)
    assert (pixels[TITLE + 8:TITLE + 88, :THUMB] == np.asarray(original)).all()


def test_a_check_kept_with_save_is_what_the_report_shows(misfiled_set, tmp_path, capsys):
    from tlfs.pipeline.fit import fit
    from tlfs.pipeline.report import ReportRequest, report

    feature_set, _, store = misfiled_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    page, _ = report(ReportRequest("noisy", "efficientnet_lite0", store), **QUIET)
    assert "No label check kept" in page and "tlfs label-issues --dataset noisy --save" in page
    assert main(["label-issues", "--dataset", "noisy", "--store", store, "--save", "--sheet", str(tmp_path / "i.png")]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    heads = f"{feature_set.uri}/_heads"
    assert summary["saved_to"] == f"{heads}/label_issues.json"
    assert json.loads(open(summary["saved_to"]).read()) == {k: v for k, v in summary.items()
                                                             if k not in ("output", "sheet", "saved_to")}
    assert open(f"{heads}/label_issues.png", "rb").read() == (tmp_path / "i.png").read_bytes()
    kept = pd.read_parquet(f"{heads}/label_issues.parquet")
    assert sorted(kept["image_id"]) == ["train/green/900.png", "train/red/901.png"]

    assert main(["describe", "--dataset", "noisy", "--store", store, "--json"]) == 0  # and describe --json holds it
    assert json.loads(capsys.readouterr().out)["checks"] == {"label_issues": json.loads(open(summary["saved_to"]).read())}
    page, _ = report(ReportRequest("noisy", "efficientnet_lite0", store), **QUIET)
    section = report_section(page, "Labels that look wrong")
    assert "<b>2 of 36</b> train labels look wrong (5.56 %)" in section
    assert "a softmax head on head fitted on the other 4 of 5 folds" in section
    assert "<tr><td>green</td><td>red</td><td class=n>1</td></tr>" in section  # the commonest doubts
    for row in kept.itertuples():  # the most doubtful, least likely label first
        assert (f"<tr><td class=n>{row.rank}</td><td>{row.image_id}</td><td>{row.label_name}</td><td class=n>"
                f"{row.label_probability:.3f}</td><td>{row.suggested}</td>") in section
    assert "<img alt='The most doubtful labels" in section


def test_the_fit_dags_checks_are_skipped_where_the_set_cannot_be_checked(tmp_path, lite0, models_root):
    from tlfs.pipeline import tasks

    source = write_tree(tmp_path / "images", noisy_images(per_class=3))  # 3 a class: 5 folds cannot be cut
    store = str(tmp_path / "store")
    run_extract("few", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    why = tasks.check_labels(tasks.SetTarget("few", "efficientnet_lite0", store), **QUIET)
    assert isinstance(why, str) and "needs 5 train images of each class" in why
    # a set of one split: neither check can run, and each says why
    run_extract("tests", [str(source)], "efficientnet_lite0", store, models_root, splits=("test",), show_progress=False,
                **QUIET)
    only_test = tasks.SetTarget("tests", "efficientnet_lite0", store)
    assert "has no train split to fit the heads that check its labels" in tasks.check_labels(only_test, **QUIET)
    assert "has no split 'train' to compare; it has test" in tasks.check_near_copies(only_test, "softmax-head", **QUIET)
