#!/usr/bin/env python3
"""`tlfs extract` against onnxruntime alone, in turn on one warmed session, on the CPU.

    .venv/bin/python scripts/pipeline-vs-ort.py --images 2048 --pairs 4

Unlike ``tlfs bench`` (which also times PyTorch, and opens a session for each row), the
pipeline and onnxruntime alone share one session here, and each pipeline run is paired
with the onnxruntime run just before it: the ratio of each pair, and their median, are
printed (one JSON line at the end). The images are ``tlfs bench``'s synthetic CIFAR-sized
JPEGs; the backbone is exported into --models.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from tlfs.models.export import export
from tlfs.models.runtime import resolve_runtime
from tlfs.models.session import open_session
from tlfs.pipeline import extract
from tlfs.pipeline.bench import IMAGE_SIZE, _rate, synthetic_dataset
from tlfs.pipeline.decode_pool import Decoder
from tlfs.pipeline.extract import ExtractionRequest, RunOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--models", default="tlfs-data/models")
    args = parser.parse_args()
    runtime = resolve_runtime("cpu")
    artifact = export(args.backbone, args.models, log=lambda *_: None)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 255, (runtime.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
               for _ in range(args.images // runtime.batch_size)]
    with tempfile.TemporaryDirectory(prefix="tlfs-pipeline-vs-ort-") as tmp:
        source = synthetic_dataset(Path(tmp), args.images)
        session = open_session(artifact, runtime=runtime)
        session.run(batches[0])
        pairs = []
        for n in range(args.pairs):
            ort = _rate(session.run, batches)
            with Decoder(0, "cpu").start() as decoder:
                request = ExtractionRequest("bench", [str(source)], args.backbone, f"{tmp}/store{n}", args.models,
                                            runtime=runtime, shard_size=args.images // 4)
                summary = extract.run(request, RunOptions(show_progress=False, session=session, decoder=decoder),
                                      log=lambda *_: None)
            pipeline = summary["rows"] / summary["extract_seconds"]
            pairs.append({"ort": round(ort, 1), "pipeline": round(pipeline, 1), "ratio": round(pipeline / ort, 3)})
            print(json.dumps(pairs[-1]), flush=True)
    print(json.dumps({"backbone": args.backbone, "images": args.images, "pairs": pairs,
                      "median_ratio": round(statistics.median(p["ratio"] for p in pairs), 3)}))


if __name__ == "__main__":
    main()
