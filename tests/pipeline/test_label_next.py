"""``tlfs label-next``: of a pool of unlabelled images, the ones a saved head is least sure of,
scored as ``tlfs predict`` scores them, spread over what they look like."""

import json

import numpy as np
import pandas as pd
import pytest

from tlfs.models.uncertainty import margins
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import fit
from tlfs.pipeline.label_next import CHOSEN_COLUMNS, LabelNextRequest, label_next
from tlfs.pipeline.predict import PredictRequest, predict
from tlfs.pipeline.saved_heads import load_head

QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def head_of(noisy_set):
    """The noisy set's heads, fitted once for the module: softmax on `head` with both views."""
    feature_set, source, store = noisy_set
    result = fit(feature_set, ["head"], "softmax", views=["original", "flip"], **QUIET)
    return result["saved_to"].rstrip("/").rsplit("/", 1)[-1]


def test_the_chosen_are_the_least_sure_of_the_pool_as_predict_scores_them(noisy_set, head_of):
    feature_set, source, store = noisy_set
    pool = (str(source / "test"),)
    chosen, summary = label_next(LabelNextRequest("noisy", "efficientnet_lite0", pool, 6, head_of, store), **QUIET)
    assert list(chosen.columns) == CHOSEN_COLUMNS and chosen["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (summary["pool"], summary["scored"], summary["rejected"], summary["chosen"]) == (36, 36, 0, 6)
    # the same probabilities as tlfs predict gives: the head's, averaged over its views
    predicted = {p.image: p for p in predict(PredictRequest("noisy", "efficientnet_lite0", pool, head_of, store), **QUIET)}
    for row in chosen.itertuples():
        assert row.label == predicted[row.image].label
        assert row.probability == pytest.approx(predicted[row.image].probability, rel=1e-5)
        assert row.margin == pytest.approx(row.probability - row.runner_up_probability, abs=1e-6)
    assert chosen["margin"].is_monotonic_increasing
    # of the least sure 10 x 6 (every one here): the least sure image of the pool is first
    head = load_head(feature_set, head_of)
    X, _, ids = feature_set.matrices(["head"], "test")
    Xf, _, _ = feature_set.matrices(["head"], "test", view="flip")
    stored = margins((head.predict_proba(X) + head.predict_proba(Xf)) / 2)
    assert chosen["image"].iloc[0] == str(source / ids[int(stored.argmin())])
    assert chosen["margin"].iloc[0] == pytest.approx(float(stored.min()), abs=1e-4)
    assert summary["median_margin_chosen"] < summary["median_margin_pool"]


def test_an_image_that_cannot_be_decoded_is_told_and_not_chosen_and_the_counts_reconcile(noisy_set, head_of, tmp_path):
    feature_set, source, store = noisy_set
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    said = []
    chosen, summary = label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(source / "test/red"), str(broken)),
                                                  50, head_of, store), log=said.append)
    assert (summary["pool"], summary["scored"], summary["rejected"], summary["chosen"]) == (13, 12, 1, 12)
    assert str(broken) not in set(chosen["image"])
    assert f"  {broken}: not scored (not a recognised image format)" in said
    with pytest.raises(PipelineError, match=r"1 image given and none could be decoded: nothing to choose from"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(broken),), 5, head_of, store), **QUIET)
    with pytest.raises(PipelineError, match="count 0: at least 1 image to choose"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(broken),), 0, head_of, store), **QUIET)


def test_tlfs_label_next_prints_the_chosen_or_writes_them_and_draws_a_sheet(noisy_set, head_of, capsys, tmp_path):
    feature_set, source, store = noisy_set
    assert main(["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "-n", "4", "--no-progress",
                 str(source / "test")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("1\t") and " or " in lines[0]
    assert json.loads(lines[-1])["chosen"] == 4
    out, sheet = tmp_path / "next.csv", tmp_path / "next.png"
    assert main(["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "--count", "5", "--no-progress",
                 "--output", str(out), "--sheet", str(sheet), str(source / "test")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["output"], summary["sheet"]) == (str(out), str(sheet))
    written = pd.read_csv(out)
    assert list(written.columns) == CHOSEN_COLUMNS and len(written) == 5
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(summary["chosen_by_predicted_class"].values()) == 5
    assert np.all(np.diff(written["margin"]) >= 0)
