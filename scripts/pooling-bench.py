"""Which pooling of the tap layers makes the best multi-layer head? (issue 15's lead)

One onnxruntime pass over a class-balanced CIFAR-10 sample (and its horizontal flip)
keeps three poolings of every tap of EfficientNet-Lite0: the global average (what the
store holds today), the global max, and a 2x2 grid of averages (four quadrants, which
overlap by a row on odd sizes). Then the session-7 multi-layer MLP recipe (signed square
root, per-layer block weights, hidden 1,024, one-cycle AdamW, label smoothing; flipped
rows as extra training rows, both views averaged at test time) is fitted on each chosen
combination, and its test accuracy printed, one JSON line per combination.

    .venv/bin/python scripts/pooling-bench.py --train-per-class 1000 --test-per-class 500

(session 8, 2-core machine: a few minutes for the pass, 2-12 min per combination.)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
ALL = ["block2", "block4", "block7", "block10", "block14", "block15", "head"]  # Lite0's taps, shallow to deep
COMBINATIONS = {
    "avg": [("avg", ALL)],
    "avg+max": [("avg", ALL), ("max", ALL)],
    "grid": [("grid", ALL)],
    "avg+grid_deep3": [("avg", ALL), ("grid", ["block14", "block15", "head"])],
    "avg_shallow+grid_deep4": [("avg", ["block2", "block4", "block7"]), ("grid", ["block10", "block14", "block15", "head"])],
    "grid+max": [("grid", ALL), ("max", ALL)],
}


def sample(split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels, seen = [], [], {}
    with tarfile.open(CIFAR / f"{split}.tar.gz") as archive:
        for member in archive:
            if not member.isfile():
                continue
            label = member.name.split("/")[1]
            if seen.get(label, 0) >= per_class:
                continue
            seen[label] = seen.get(label, 0) + 1
            images.append(np.asarray(Image.open(io.BytesIO(archive.extractfile(member).read())).convert("RGB")))
            labels.append(label)
    names = sorted(set(labels))
    return np.stack(images), np.array([names.index(n) for n in labels])


def pooled_network():
    """Lite0's taps, each pooled three ways, exported to ONNX (the TorchScript exporter,
    as models/export.py; the grid is models/taps.py's, as a _2x2 variant stores it)."""
    from tlfs.models.backbones import load_backbone
    from tlfs.models.taps import TapNetwork, grid

    class Pooled(TapNetwork):
        def forward(self, images):
            acts = self.extractor(self.preprocess(images))
            maps = [acts[name] for name in ALL]
            return (torch.cat([m.mean((2, 3)) for m in maps], 1),
                    torch.cat([m.amax((2, 3)) for m in maps], 1),
                    torch.cat([grid(m) for m in maps], 1))

    loaded = load_backbone("efficientnet_lite0")
    return Pooled(loaded.spec, loaded.module, taps=ALL).eval()


def extract(per_class: dict[str, int], workdir: Path) -> dict:
    import onnxruntime as ort

    path = workdir / "pooled.onnx"
    with torch.no_grad():
        torch.onnx.export(pooled_network(), (torch.zeros((2, 32, 32, 3), dtype=torch.uint8),), str(path), dynamo=False,
                          opset_version=17, input_names=["images"], output_names=["avg", "max", "grid"],
                          dynamic_axes={n: {0: "batch"} for n in ("images", "avg", "max", "grid")})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    data = {}
    for split, n in per_class.items():
        t0 = time.perf_counter()
        images, labels = sample(split, n)
        for view in ("original", "flip"):
            batch = images[:, :, ::-1] if view == "flip" else images
            outs = [session.run(None, {"images": np.ascontiguousarray(batch[i:i + 64])}) for i in range(0, len(batch), 64)]
            data[split, view] = {k: np.concatenate([o[j] for o in outs]) for j, k in enumerate(("avg", "max", "grid"))}
        data[split, "labels"] = labels
        print(f"{split}: {len(labels)} images, 2 views, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return data


def columns(pooled: dict, combination: list) -> tuple[np.ndarray, list[int]]:
    dims = {"block2": 24, "block4": 40, "block7": 80, "block10": 112, "block14": 192, "block15": 320, "head": 1280}
    parts, blocks = [], []
    for kind, taps in combination:
        width = 4 if kind == "grid" else 1
        offsets = np.cumsum([0] + [dims[t] * width for t in ALL])
        for tap in taps:
            i = ALL.index(tap)
            parts.append(pooled[kind][:, offsets[i]:offsets[i + 1]])
            blocks.append(dims[tap] * width)
    return np.concatenate(parts, 1), blocks


def fit_mlp(data: dict, combination: list, epochs: int, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    signed_sqrt = lambda a: (np.sign(a) * np.sqrt(np.abs(a))).astype(np.float32)  # noqa: E731
    train = [columns(data["train", v], combination) for v in ("original", "flip")]
    blocks = train[0][1]
    x = signed_sqrt(np.concatenate([t[0] for t in train]))
    y = np.concatenate([data["train", "labels"]] * 2)
    mean, std = x.mean(0), x.std(0) + 1e-6
    std = std / np.repeat([np.sqrt(min(blocks) / b) for b in blocks], blocks).astype(np.float32)  # equal weight per block
    z = torch.from_numpy((x - mean) / std)
    tests = [torch.from_numpy((signed_sqrt(columns(data["test", v], combination)[0]) - mean) / std)
             for v in ("original", "flip")]
    target = torch.from_numpy(y.astype(np.int64))
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Dropout(0.2), nn.Linear(z.shape[1], 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10))
    batch = 512
    steps = epochs * ((len(z) + batch - 1) // batch)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    for _ in range(epochs):
        net.train()
        for rows in torch.randperm(len(z)).split(batch):
            optimizer.zero_grad()
            loss(net(z[rows]), target[rows]).backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        original, flipped = (net(t).softmax(1).numpy() for t in tests)
    truth = data["test", "labels"]
    accuracy = lambda p: round(float((p.argmax(1) == truth).mean()) * 100, 2)  # noqa: E731
    return {"dims": z.shape[1], "test_original": accuracy(original), "test_both_views": accuracy(original + flipped),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=30, help="MLP epochs (default 30, for a 10,000-image sample)")
    parser.add_argument("--combinations", default=",".join(COMBINATIONS),
                        help=f"comma-separated, of: {', '.join(COMBINATIONS)}")
    args = parser.parse_args(argv)
    if not CIFAR.exists():
        parser.error(f"{CIFAR} is missing: the shared CIFAR-10 archives are needed")
    with tempfile.TemporaryDirectory() as workdir:
        data = extract({"train": args.train_per_class, "test": args.test_per_class}, Path(workdir))
    for name in args.combinations.split(","):
        print(json.dumps({"combination": name, "train_images": len(data["train", "labels"]),
                          "test_images": len(data["test", "labels"]), **fit_mlp(data, COMBINATIONS[name], args.epochs)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
