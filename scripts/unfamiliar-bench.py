"""How well `tlfs predict --unfamiliar` tells images of no known class from images of the
known ones, on a committed set: each class in turn is held out (the set's training images of
the other classes are the known ones), and the test split's images are scored. Prints, for
each held-out class and K:

- the share of the known classes' test images marked unfamiliar (the share asked leaves
  about 1 - share of them), and of the held-out class's;
- AUROC of the similarity for telling the two apart (1: always, 0.5: chance), and the
  held-out class's share still familiar where 95 % of the known test images are (FPR95);
- the same two for a softmax head's highest probability on the known classes (the
  probability `--min-probability` reads; Hendrycks and Gimpel, 2017), as a baseline.

    python scripts/unfamiliar-bench.py --dataset cifar10 --layer block15 [--neighbours 10 --neighbours 50]
        [--hold-out cat --hold-out truck] [--share 0.95] [--backbone B] [--store URI]

One JSON line a held-out class and K, and one of the means at the end. The store is not changed.
A held-out class is a near stranger (a cat's features are a dog's neighbours). Images from
elsewhere, through `predict` itself (decoded, the backbone, a saved head, every class known):

    python scripts/unfamiliar-bench.py --dataset cifar10 --head mlp-block15 --known TEST_IMAGES --photos 1000
        [--photo-size 32] [--neighbours 10]

compares the known folder's images (the set's own kind, e.g. its test split's files) with
random square crops of the sample photos that scikit-image, scikit-learn and matplotlib ship
(microscopy, textures, text, astronomy, a few cats and vehicles), each resized to
``--photo-size`` pixels, as above: the shares marked unfamiliar, AUROC and FPR95 of the
similarity and of the head's probability."""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from tlfs.features.reader import open_set
from tlfs.models.fit_data import Examples, FitData
from tlfs.models.heads import fit as fit_head
from tlfs.pipeline.familiarity import FAMILIAR_SHARE, NEIGHBOURS, familiarity_from


def fpr_at_95(known: np.ndarray, stranger: np.ndarray) -> float:
    """The strangers' share scoring at least what 95 % of the known images score (higher: more familiar)."""
    return float((stranger >= np.quantile(known, 0.05)).mean())


def softmax_scores(train: tuple[np.ndarray, np.ndarray], test: np.ndarray, seed: int) -> np.ndarray:
    """A softmax head fitted on the known classes (a tenth held for its validation): its highest probability."""
    X, y = train
    order = np.random.default_rng(seed).permutation(len(y))
    cut = len(y) // 10
    known = np.unique(y)
    index = np.searchsorted(known, y)
    data = FitData(Examples(X[order[cut:]], index[order[cut:]]), Examples(X[order[:cut]], index[order[:cut]]), len(known))
    head, _ = fit_head("softmax", data, log=lambda *_: None)
    return head.predict_proba(test).max(axis=1)


def sample_photos() -> list[np.ndarray]:
    """The colour and grey sample photos bundled in scikit-image, scikit-learn and matplotlib's wheels."""
    import matplotlib
    import sklearn.datasets
    from PIL import Image
    from skimage import data

    photos = []
    for name in ("astronaut", "brick", "camera", "cat", "cell", "checkerboard", "clock", "coffee", "coins", "colorwheel",
                 "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms",
                 "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text"):
        image = np.asarray(getattr(data, name)())
        image = image.astype(np.uint8) * 255 if image.dtype == bool else image
        if image.dtype != np.uint8:
            image = (255 * (image - image.min()) / max(float(image.max() - image.min()), 1e-9)).astype(np.uint8)
        photos.append(np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3])
    photos += [np.asarray(image) for image in sklearn.datasets.load_sample_images().images]
    photos.append(np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")))
    return photos


def write_crops(folder: Path, count: int, size: int, seed: int) -> list[str]:
    """``count`` random square crops of the sample photos (a quarter to all of the shorter side), at ``size`` pixels."""
    from PIL import Image

    rng, photos, paths = np.random.default_rng(seed), sample_photos(), []
    for number in range(count):
        photo = photos[number % len(photos)]
        side = int(rng.uniform(0.25, 1.0) * min(photo.shape[:2]))
        top, left = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        crop = Image.fromarray(np.ascontiguousarray(photo[top:top + side, left:left + side]))
        paths.append(str(folder / f"{number:05d}.png"))
        crop.resize((size, size), Image.Resampling.LANCZOS).save(paths[-1])
    return paths


def elsewhere(args) -> None:
    from tlfs.pipeline.predict import PredictRequest, predict

    with tempfile.TemporaryDirectory() as folder:
        crops = write_crops(Path(folder), args.photos, args.photo_size, args.seed)
        for k in args.neighbours or [None]:  # None: predict's default
            started = time.perf_counter()
            rows = predict(PredictRequest(args.dataset, args.backbone, (args.known, *crops), args.head, args.store,
                                          unfamiliar=True, neighbours=k, familiar_share=args.share), log=lambda *_: None)
            seconds = time.perf_counter() - started
            known, other = rows[:-len(crops)], rows[-len(crops):]
            similarity = [np.array([r.similarity for r in part]) for part in (known, other)]
            probability = [np.array([r.probability for r in part]) for part in (known, other)]
            is_known = np.r_[np.ones(len(known), bool), np.zeros(len(other), bool)]
            result = {"dataset": args.dataset, "head": args.head, "neighbours": k, "share": args.share,
                      "known_images": len(known), "elsewhere_images": len(other), "photo_size": args.photo_size,
                      "known_unfamiliar": round(float(np.mean([r.familiar is False for r in known])), 4),
                      "elsewhere_unfamiliar": round(float(np.mean([r.familiar is False for r in other])), 4),
                      "auroc": round(float(roc_auc_score(is_known, np.concatenate(similarity))), 4),
                      "fpr95": round(fpr_at_95(*similarity), 4),
                      "probability_auroc": round(float(roc_auc_score(is_known, np.concatenate(probability))), 4),
                      "probability_fpr95": round(fpr_at_95(*probability), 4),
                      "elsewhere_probability_at_least_0.9": round(float((probability[1] >= 0.9).mean()), 4),
                      "seconds": round(seconds, 1)}
            print(f"K={k or 'default'}: unfamiliar {result['known_unfamiliar']:.1%} of {len(known):,} known images, "
                  f"{result['elsewhere_unfamiliar']:.1%} of {len(other):,} from elsewhere ({args.photo_size} px); AUROC "
                  f"{result['auroc']:.3f} (the head's probability {result['probability_auroc']:.3f}), FPR95 "
                  f"{result['fpr95']:.1%} ({result['probability_fpr95']:.1%}); {seconds:.1f} s")
            print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--store")
    parser.add_argument("--layer", action="append", help="repeat for several layers side by side (default: head)")
    parser.add_argument("--neighbours", type=int, action="append", help=f"K (repeat; default {NEIGHBOURS})")
    parser.add_argument("--hold-out", action="append", help="a class to hold out (repeat; default: each in turn)")
    parser.add_argument("--share", type=float, default=FAMILIAR_SHARE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--head", help="with --photos: the saved head predict uses (default: the sweep's)")
    parser.add_argument("--known", help="with --photos: a folder of the set's own kind of images (its test files)")
    parser.add_argument("--photos", type=int, help="score this many crops of sample photos against --known")
    parser.add_argument("--photo-size", type=int, default=32)
    args = parser.parse_args()
    if args.photos:
        if not args.known:
            parser.error("--photos needs --known FOLDER")
        return elsewhere(args)
    layers = args.layer or ["head"]
    feature_set = open_set(args.dataset, args.backbone, args.store)
    train = {layer: feature_set.matrix(layer, "train") for layer in layers}
    test = {layer: feature_set.matrix(layer, "test") for layer in layers}
    y_train, y_test = train[layers[0]][1], test[layers[0]][1]
    X_test = np.hstack([test[layer][0] for layer in layers])
    results = []
    for name in args.hold_out or feature_set.classes:
        held = feature_set.classes.index(name)
        kept, stranger = y_train != held, y_test == held
        baseline = softmax_scores((np.hstack([train[layer][0][kept] for layer in layers]), y_train[kept]), X_test,
                                  args.seed)
        for k in args.neighbours or [NEIGHBOURS]:
            started = time.perf_counter()
            familiarity = familiarity_from({layer: train[layer][0][kept] for layer in layers}, k, args.share, seed=args.seed)
            similarity = familiarity.similarity(X_test)
            seconds = time.perf_counter() - started
            unfamiliar = similarity < familiarity.threshold
            result = {"dataset": args.dataset, "layers": layers, "held_out": name, "neighbours": k, "share": args.share,
                      "known_unfamiliar": round(float(unfamiliar[~stranger].mean()), 4),
                      "held_out_unfamiliar": round(float(unfamiliar[stranger].mean()), 4),
                      "auroc": round(float(roc_auc_score(~stranger, similarity)), 4),
                      "fpr95": round(fpr_at_95(similarity[~stranger], similarity[stranger]), 4),
                      "softmax_auroc": round(float(roc_auc_score(~stranger, baseline)), 4),
                      "softmax_fpr95": round(fpr_at_95(baseline[~stranger], baseline[stranger]), 4),
                      "threshold": round(familiarity.threshold, 4), "seconds": round(seconds, 1)}
            results.append(result)
            print(f"{name} held out, K={k}: unfamiliar {result['known_unfamiliar']:.1%} of the known classes' test images, "
                  f"{result['held_out_unfamiliar']:.1%} of {name}'s; AUROC {result['auroc']:.3f} (softmax's probability "
                  f"{result['softmax_auroc']:.3f}), FPR95 {result['fpr95']:.1%} ({result['softmax_fpr95']:.1%}), "
                  f"{seconds:.1f} s")
            print(json.dumps(result))
    for k in args.neighbours or [NEIGHBOURS]:
        rows = [r for r in results if r["neighbours"] == k]
        means = {key: round(float(np.mean([r[key] for r in rows])), 4)
                 for key in ("known_unfamiliar", "held_out_unfamiliar", "auroc", "fpr95", "softmax_auroc", "softmax_fpr95")}
        print(f"mean over {len(rows)} held-out classes, K={k}: {json.dumps(means)}")
        print(json.dumps({"dataset": args.dataset, "layers": layers, "neighbours": k, "held_out": len(rows), **means}))


if __name__ == "__main__":
    main()
