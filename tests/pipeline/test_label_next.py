"""``tlfs label-next``: of a pool of unlabelled images, the ones a saved head is least sure of,
scored as ``tlfs predict`` scores them, spread over what they look like."""

import json

import numpy as np
import pandas as pd
import pytest

from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import fit
from tlfs.pipeline.label_next import CHOSEN_COLUMNS, LabelNextRequest, label_next
from tlfs.pipeline.predict import PredictRequest, predict
from tests.conftest import noisy_images, write_tree

QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def head_of(noisy_set):
    """The noisy set's heads, fitted once for the module: softmax on `head` with both views."""
    feature_set, source, store = noisy_set
    result = fit(feature_set, ["head"], "softmax", views=["original", "flip"], **QUIET)
    return result["saved_to"].rstrip("/").rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """36 images of the set's kind that it does not hold (another draw of the noise)."""
    return write_tree(tmp_path_factory.mktemp("pool"), {name.split("/", 1)[1]: data for name, data
                                                        in noisy_images(seed=7).items() if name.startswith("test/")})


def test_the_chosen_are_the_least_sure_of_the_pool_as_predict_scores_them(noisy_set, head_of, pool):
    feature_set, source, store = noisy_set
    chosen, summary = label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(pool),), 6, head_of, store), **QUIET)
    assert list(chosen.columns) == CHOSEN_COLUMNS and chosen["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (summary["pool"], summary["scored"], summary["rejected"], summary["already_stored"], summary["chosen"]) == (
        36, 36, 0, 0, 6)
    # the same probabilities as tlfs predict gives: the head's, averaged over its views
    predicted = {p.image: p for p in predict(PredictRequest("noisy", "efficientnet_lite0", (str(pool),), head_of, store),
                                             **QUIET)}
    for row in chosen.itertuples():
        assert row.label == predicted[row.image].label
        assert row.probability == pytest.approx(predicted[row.image].probability, rel=1e-5)
        assert row.margin == pytest.approx(row.probability - row.runner_up_probability, abs=1e-6)
    assert chosen["margin"].is_monotonic_increasing
    # asked for the whole pool, every image by margin: the least sure of all is the first chosen above
    every, _ = label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(pool),), 36, head_of, store), **QUIET)
    assert every["margin"].is_monotonic_increasing and len(every) == 36
    assert chosen["image"].iloc[0] == every["image"].iloc[0]
    assert set(chosen["image"]) <= set(every["image"].iloc[:60])
    assert summary["median_margin_chosen"] < summary["median_margin_pool"]


def test_images_the_set_holds_and_broken_ones_are_told_and_not_chosen_and_the_counts_reconcile(noisy_set, head_of, pool,
                                                                                                tmp_path):
    feature_set, source, store = noisy_set
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    held = [str(source / f"test/red/{i:03d}.png") for i in range(3)] + [str(source / "train/blue/004.png")]
    said = []
    chosen, summary = label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(pool / "red"), str(broken), *held),
                                                  50, head_of, store), log=said.append)
    assert (summary["pool"], summary["scored"], summary["rejected"], summary["already_stored"], summary["chosen"]) == (
        17, 16, 1, 4, 12)
    assert not set(chosen["image"]) & {str(broken), *held}
    assert f"  {broken}: not scored (not a recognised image format)" in said
    told = [line for line in said if line.startswith("left out 4 images the set already holds")]
    assert told and f"{held[0]} = test/red/000.png" in told[0]
    with pytest.raises(PipelineError, match=r"every image scored is one .* already holds: nothing to choose from"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", tuple(held), 5, head_of, store), **QUIET)
    with pytest.raises(PipelineError, match=r"1 image given and none could be decoded: nothing to choose from"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(broken),), 5, head_of, store), **QUIET)
    with pytest.raises(PipelineError, match="count 0: at least 1 image to choose"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(broken),), 0, head_of, store), **QUIET)


def test_tlfs_label_next_prints_the_chosen_or_writes_them_and_draws_a_sheet(noisy_set, head_of, pool, capsys, tmp_path):
    feature_set, source, store = noisy_set
    assert main(["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "-n", "4", "--no-progress",
                 str(pool)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("1\t") and " or " in lines[0]
    assert json.loads(lines[-1])["chosen"] == 4
    out, sheet = tmp_path / "next.csv", tmp_path / "next.png"
    assert main(["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "--count", "5", "--no-progress",
                 "--output", str(out), "--sheet", str(sheet), str(pool)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["output"], summary["sheet"]) == (str(out), str(sheet))
    written = pd.read_csv(out)
    assert list(written.columns) == CHOSEN_COLUMNS and len(written) == 5
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(summary["chosen_by_predicted_class"].values()) == 5
    assert np.all(np.diff(written["margin"]) >= 0)


def test_the_fit_dags_task_saves_the_queue_beside_the_heads(noisy_set, head_of, pool):
    """``tasks.choose_next_to_label`` (the fit_heads DAG's label_next): the chosen images, least
    sure first, as _heads/label_next.csv, and their sheet, of the version the run fitted."""
    from pathlib import Path

    from tlfs.pipeline import tasks

    feature_set, source, store = noisy_set
    target = tasks.SetTarget("noisy", "efficientnet_lite0", store, feature_set.version)
    summary = tasks.choose_next_to_label(target, head_of, [str(pool / "green"), str(source / "test/red/001.png")], 4,
                                         **QUIET)
    assert (summary["scored"], summary["already_stored"], summary["chosen"]) == (13, 1, 4)
    saved = Path(summary["saved_to"])
    assert saved == Path(feature_set.uri) / "_heads" / "label_next.csv"
    queue = pd.read_csv(saved)
    assert list(queue.columns) == CHOSEN_COLUMNS and queue["rank"].tolist() == [1, 2, 3, 4]
    assert all(image.startswith(str(pool / "green")) for image in queue["image"])
    assert (saved.parent / "label_next.png").read_bytes()[:4] == b"\x89PNG"
