"""A saved head and the backbone under it as one ONNX file (``tlfs export-classifier``):
a classifier to ship, which onnxruntime runs alone (models/standalone_classifier.py).

Before the file is written, the classifier is checked against ``tlfs predict``'s own path
(the backbone's session, the float16 rounding, the head's NumPy or PyTorch probabilities,
the views) on real photos at their size and as a CIFAR-sized batch, and on noise: the same
class for every image, probabilities within :data:`TOLERANCE`. A graph that disagrees is
never written.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.features import layout
from tlfs.features.reader import open_set
from tlfs.features.storage import atomic_write_bytes
from tlfs.models import head_onnx, sample_images
from tlfs.models.runtime import resolve_runtime
from tlfs.models.session import local_onnx, open_session
from tlfs.models.standalone_classifier import FAMILIAR, IMAGES, SIMILARITY, standalone_classifier
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.familiarity import FAMILIAR_SHARE, Familiarity, familiarity_of
from tlfs.pipeline.image_decode import DECODE
from tlfs.pipeline.lineage import graph_of, model_of
from tlfs.pipeline.predict import batch_scores
from tlfs.pipeline.saved_heads import CLASSIFIER_FILE, SavedHead, default_head, load_head

TOLERANCE = 1e-4  # the largest difference of a probability from predict's: float32 sums in another order


@dataclass(frozen=True)
class ClassifierRequest:
    dataset: str
    backbone: str
    head: str | None = None  # a saved head (softmax-block15); None: the best saved head (saved_heads.default_head)
    output: str | None = None  # a file URI, local or remote; None: classifier.onnx in the head's folder
    store: str | None = None
    version: int | None = None  # the set's version whose heads these are (None: the newest)
    # also say whether each image is like the training images (predict --unfamiliar's): their features go in the file
    unfamiliar: bool = False
    neighbours: int | None = None
    familiar_share: float = FAMILIAR_SHARE


def export_classifier(request: ClassifierRequest, log: Callable[[str], None] = print) -> dict:
    """Write the classifier of ``request``'s head and say what it is: where, its inputs and
    outputs, classes, the head's test accuracy, and the parity check's figures."""
    import onnxruntime as ort

    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    head = load_head(feature_set, request.head or default_head(feature_set))
    # an int8 set's head learnt int8 features: its classifier holds the int8 graph (a CPU's) that
    # computed them; any other set's the fp32 graph, which every onnxruntime runs (fp16 features
    # are fp32's to 1e-3)
    precision = "int8" if feature_set.lineage["runtime"]["precision"] == "int8" else "fp32"
    artifact = graph_of(feature_set)[0] if precision == "int8" else model_of(feature_set)
    layers, views = head.metrics["layers"], head.metrics["views"]
    started = time.perf_counter()
    familiarity = (familiarity_of(feature_set, layers, request.neighbours, request.familiar_share, log=log)
                   if request.unfamiliar else None)
    graph = head_onnx.head_graph(head.kind, head.files, len(head.classes), head.metrics["dims"])
    input_size = artifact.card["preprocessing"]["input_size"]
    metadata = _metadata(feature_set, head, artifact.version, input_size, familiarity)
    runtime = resolve_runtime("cpu", precision)
    model = standalone_classifier(local_onnx(artifact, precision=runtime.precision), layers, views, graph, metadata,
                                  familiarity)
    model.doc_string = metadata["tlfs.summary"]
    data = model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    parity = check_parity(session, open_session(artifact, layers, runtime), head, familiarity)
    output = request.output or f"{layout.heads_uri(feature_set.uri)}/{head.name}/{CLASSIFIER_FILE}"
    atomic_write_bytes(output, data)
    seconds = time.perf_counter() - started
    log(f"{head.name} of {feature_set.uri} ({'+'.join(layers)}, views {'+'.join(views)}, test accuracy "
        f"{head.metrics.get('test_accuracy', float('nan')):.4f}) as one ONNX classifier: {output} ({len(data) / 1e6:.1f} MB, "
        f"{seconds:.1f}s); checked against tlfs predict on {parity['images']} images: the same classes"
        f"{', the same familiar ones' if familiarity else ''}, probabilities{' and similarities' if familiarity else ''} "
        f"within {parity['max_difference']:.1e}")
    return {"output": output, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "head": head.name, "layers": layers, "views": views,
            "classes": head.classes, "test_accuracy": head.metrics.get("test_accuracy"),
            "backbone_version": artifact.version, "input_size": input_size, "parity": parity,
            "inputs": {IMAGES: "uint8 [batch, height, width, 3], RGB"},
            "outputs": {"probabilities": f"float32 [batch, {len(head.classes)}]", "label": "int64 [batch]",
                        **({SIMILARITY: "float32 [batch]", FAMILIAR: "bool [batch]"} if familiarity else {})},
            **({"familiarity": familiarity.summary()} if familiarity else {})}


def _metadata(feature_set, head: SavedHead, backbone_version: str, input_size: int,
              familiarity: Familiarity | None) -> dict[str, str]:
    """What the file says of itself (ONNX metadata_props): enough to use it, and where it came from."""
    decoding = feature_set.lineage["preprocessing"].get("decode", DECODE)  # as the set's images were decoded
    summary = (f"tlfs classifier: {head.name} fitted on {feature_set.dataset} features of {backbone_version}. Input "
               f"'images': uint8 [batch, height, width, 3], RGB; an image larger than {input_size} pixels a side is "
               f"resized to {input_size}x{input_size} first, as tlfs decodes ({decoding}); one batch holds images of one "
               f"size. Outputs: 'probabilities' float32 [batch, classes] in the order of tlfs.classes, 'label' int64 "
               f"[batch], the likeliest class's index.")
    familiar = {}
    if familiarity is not None:
        summary += (f" 'similarity' float32 [batch]: the cosine of the image's features to its "
                    f"{familiarity.neighbours}-th most similar of the {len(familiarity.references)} training images; "
                    f"'familiar' bool [batch]: at least {familiarity.threshold:.6f} (tlfs.familiar_threshold), which "
                    f"{familiarity.share:.0%} of the training images reach.")
        familiar = {"tlfs.familiar_threshold": repr(familiarity.threshold), "tlfs.neighbours": str(familiarity.neighbours),
                    "tlfs.familiar_share": repr(familiarity.share)}
    return {**familiar, "tlfs.summary": summary, "tlfs.classes": json.dumps(head.classes), "tlfs.dataset": feature_set.dataset,
            "tlfs.feature_set": feature_set.uri, "tlfs.version": str(feature_set.version), "tlfs.head": head.name,
            "tlfs.layers": json.dumps(head.metrics["layers"]), "tlfs.views": json.dumps(head.metrics["views"]),
            "tlfs.backbone_version": backbone_version, "tlfs.input_size": str(input_size), "tlfs.decode": decoding,
            "tlfs.test_accuracy": json.dumps(head.metrics.get("test_accuracy"))}


def check_parity(classifier, session, head: SavedHead, familiarity: Familiarity | None = None) -> dict:
    """The classifier (an onnxruntime session) against predict's path (the backbone's
    ``session`` and ``head``, and ``familiarity``) on real photos and noise: an error where a
    class differs, a probability or a similarity is further than :data:`TOLERANCE` from
    predict's, or an image is familiar to one and not the other (away from the threshold)."""
    rng = np.random.default_rng(0)
    batches = sample_images.parity_batches() + [rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)]
    worst, images = 0.0, 0
    for batch in batches:
        outputs = classifier.run(None, {IMAGES: batch})
        expected = batch_scores(head, session, batch, familiarity)
        probabilities, labels, expected_probabilities = outputs[0], outputs[1], expected[:, :len(head.classes)]
        differences = [np.abs(probabilities - expected_probabilities).max()]
        agree = np.array_equal(labels, expected_probabilities.argmax(1))
        if familiarity is not None:
            similarity, familiar, expected_similarity = outputs[2], outputs[3], expected[:, -1]
            differences.append(np.abs(similarity - expected_similarity).max())
            clear = np.abs(expected_similarity - familiarity.threshold) > TOLERANCE
            agree &= np.array_equal(familiar[clear], expected_similarity[clear] >= familiarity.threshold)
        difference = float(max(differences))
        if difference > TOLERANCE or not agree:
            raise PipelineError(f"the {head.name} classifier's graph disagrees with tlfs predict on a {batch.shape} batch "
                                f"(classes {labels.tolist()} against {expected_probabilities.argmax(1).tolist()}, "
                                f"probabilities{' and similarities' if familiarity else ''} {difference:.1e} apart): "
                                "not written")
        worst, images = max(worst, difference), images + len(batch)
    return {"images": images, "max_difference": worst}
