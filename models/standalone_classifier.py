"""A backbone version's graph, a feature set's views and a head as one ONNX classifier:
uint8 RGB images in (``images``, N x H x W x 3, as the backbone takes them), the head's
``probabilities`` (float32, N x classes) and the ``label`` (int64, the likeliest class's
index) out. It needs onnxruntime alone: no tlfs, no Python.

Inside, each image goes the way ``tlfs predict`` sends it: every view of the batch (the
flipped images beside the originals) through the backbone's graph, pruned to the head's
layers; each layer's features rounded to float16 as the set stores them, side by side;
the head; its probabilities averaged over the views. With a familiarity (``tlfs
export-classifier --unfamiliar``), the original images' features, each layer at unit
length, are compared with the training images' (a constant of the graph) as ``tlfs predict
--unfamiliar`` does: ``similarity`` (float32, N: the cosine to the K-th most similar) and
``familiar`` (bool, N: at least the threshold) come out too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlfs.models import head_onnx
from tlfs.models.errors import ModelError
from tlfs.models.names import EXTRA_VIEWS

IMAGES, PROBABILITIES, LABEL = "images", "probabilities", "label"
SIMILARITY, FAMILIAR = "similarity", "familiar"
GRAPH_VIEWS = ("original", "flip")  # what the graph computes; pipeline/views.py computes the same on NumPy batches
assert set(GRAPH_VIEWS[1:]) == set(EXTRA_VIEWS), "models/names.py names the views"


def standalone_classifier(backbone_onnx: Path, layers: list[str], views: list[str], head, metadata: dict[str, str],
                          familiarity=None):
    """The classifier (an ``onnx.ModelProto``) of ``head`` (:func:`head_onnx.head_graph`'s
    model) on ``layers`` of the backbone graph at ``backbone_onnx``, averaged over ``views``;
    ``metadata`` goes into the model's metadata_props. ``familiarity``: where given, anything
    with ``references`` (the training images' rows, each layer at unit length), ``neighbours``
    (K) and ``threshold``, measured on the original images."""
    import onnx
    from onnx import compose, helper

    unknown = [view for view in views if view not in GRAPH_VIEWS]
    if unknown or not views:
        raise ModelError(f"views {views}: a classifier graph computes {', '.join(GRAPH_VIEWS)}")
    backbone = onnx.load(str(backbone_onnx))
    missing = [layer for layer in layers if layer not in {o.name for o in backbone.graph.output}]
    if missing:
        raise ModelError(f"{backbone_onnx} has no output {', '.join(missing)}")
    backbone = onnx.utils.Extractor(backbone).extract_model([IMAGES], list(layers))  # only what the head's layers need
    backbone = compose.add_prefix(backbone, "backbone/")
    views_model, joined = _views_model(views, backbone), _joined_model(layers, views, head, backbone, familiarity)
    model = compose.merge_models(views_model, backbone, io_map=[("view_batch", f"backbone/{IMAGES}")])
    model = compose.merge_models(model, joined, io_map=[(f"backbone/{layer}", f"joined/{layer}") for layer in layers])
    model.producer_name = "tlfs"
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def _views_model(views: list[str], backbone):
    """``images`` -> ``view_batch``: the views' batches one after another (N x views)."""
    from onnx import TensorProto, helper, numpy_helper

    image = helper.make_tensor_value_info(IMAGES, TensorProto.UINT8, ["batch", "height", "width", 3])
    out = helper.make_tensor_value_info("view_batch", TensorProto.UINT8, ["view_batch", "height", "width", 3])
    nodes, constants, batches = [], [], []
    for view in views:
        if view == "original":
            batches.append(IMAGES)
            continue
        # left-right, the W axis (pipeline/views.py): a slice from the last column back past the first
        constants += [numpy_helper.from_array(np.array(value, np.int64), name) for name, value in
                      (("flip_starts", [-1]), ("flip_ends", [np.iinfo(np.int64).min]), ("flip_axes", [2]),
                       ("flip_steps", [-1]))]
        nodes.append(helper.make_node("Slice", [IMAGES, "flip_starts", "flip_ends", "flip_axes", "flip_steps"],
                                      ["flipped"], name="flip"))
        batches.append("flipped")
    nodes.append(helper.make_node("Concat", batches, ["view_batch"], name="views", axis=0) if len(batches) > 1
                 else helper.make_node("Identity", batches, ["view_batch"], name="views"))
    graph = helper.make_graph(nodes, "views", [image], [out], constants)
    return helper.make_model(graph, opset_imports=list(backbone.opset_import), ir_version=backbone.ir_version)


def _joined_model(layers: list[str], views: list[str], head, backbone, familiarity=None):
    """Each layer (``joined/<layer>``, views x N rows) rounded to float16 and back, side
    by side -> the head's nodes -> its probabilities averaged over the views, and the label;
    with ``familiarity``, the original images' similarity and whether it is familiar."""
    from onnx import TensorProto, compose, helper, numpy_helper

    head = compose.add_prefix(head, "joined/head/")
    features = f"joined/head/{head_onnx.FEATURES}"  # the head's input, made here from the layers
    nodes = []
    for layer in layers:  # the set stores float16: the head was fitted on these values, not the float32 ones
        nodes += [helper.make_node("Cast", [f"joined/{layer}"], [f"joined/{layer}/half"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", [f"joined/{layer}/half"], [f"joined/{layer}/stored"], to=TensorProto.FLOAT)]
    stored = [f"joined/{layer}/stored" for layer in layers]
    nodes.append(helper.make_node("Concat", stored, [features], axis=1) if len(stored) > 1
                 else helper.make_node("Identity", stored, [features]))
    nodes += list(head.graph.node)
    classes = head.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    nodes += [helper.make_node("Reshape", [head.graph.output[0].name, "joined/by_view"], ["joined/per_view"]),
              helper.make_node("ReduceMean", ["joined/per_view", "joined/view_axis"], [PROBABILITIES], keepdims=0),
              helper.make_node("ArgMax", [PROBABILITIES], [LABEL], axis=1, keepdims=0)]
    constants = [numpy_helper.from_array(np.array([len(views), -1, classes], np.int64), "joined/by_view"),
                 numpy_helper.from_array(np.array([0], np.int64), "joined/view_axis")]
    outputs = [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", classes]),
               helper.make_tensor_value_info(LABEL, TensorProto.INT64, ["batch"])]
    if familiarity is not None:
        familiar_nodes, familiar_constants = _familiarity_nodes(stored, views, familiarity)
        nodes += familiar_nodes
        constants += familiar_constants
        outputs += [helper.make_tensor_value_info(SIMILARITY, TensorProto.FLOAT, ["batch"]),
                    helper.make_tensor_value_info(FAMILIAR, TensorProto.BOOL, ["batch"])]
    graph = helper.make_graph(
        nodes, "joined",
        [helper.make_tensor_value_info(f"joined/{layer}", TensorProto.FLOAT, ["view_batch", None]) for layer in layers],
        outputs, constants + list(head.graph.initializer))
    opsets = {o.domain: o.version for o in list(backbone.opset_import) + list(head.opset_import)}
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                             ir_version=backbone.ir_version)


def _familiarity_nodes(stored: list[str], views: list[str], familiarity):
    """``(nodes, constants)``: the ``stored`` layers' rows each scaled to unit length, side by
    side and scaled by 1/sqrt(layers) (models/neighbours.unit_layers), the original view's
    rows, their cosines to every training image, the K-th largest (``similarity``) and
    whether it reaches the threshold (``familiar``)."""
    from onnx import helper, numpy_helper

    if "original" not in views:
        raise ModelError(f"views {views}: familiarity is measured on the original images")
    nodes, units = [], []
    for name in stored:
        nodes += [helper.make_node("Mul", [name, name], [f"{name}/squares"]),
                  helper.make_node("ReduceSum", [f"{name}/squares", "familiar/row_axis"], [f"{name}/sum"], keepdims=1),
                  helper.make_node("Sqrt", [f"{name}/sum"], [f"{name}/norm"]),
                  helper.make_node("Max", [f"{name}/norm", "familiar/tiny"], [f"{name}/safe_norm"]),  # a zero row stays 0
                  helper.make_node("Div", [name, f"{name}/safe_norm"], [f"{name}/unit"])]
        units.append(f"{name}/unit")
    references = np.asarray(familiarity.references, np.float32)
    nodes += [helper.make_node("Concat", units, ["familiar/units"], axis=1),
              helper.make_node("Div", ["familiar/units", "familiar/root_layers"], ["familiar/rows"]),
              helper.make_node("Reshape", ["familiar/rows", "familiar/by_view"], ["familiar/per_view"]),
              helper.make_node("Gather", ["familiar/per_view", "familiar/original"], ["familiar/queries"], axis=0),
              helper.make_node("MatMul", ["familiar/queries", "familiar/references"], ["familiar/cosines"]),
              helper.make_node("TopK", ["familiar/cosines", "familiar/k"], ["familiar/nearest", "familiar/nearest_rows"],
                               axis=1, largest=1, sorted=1),
              helper.make_node("Gather", ["familiar/nearest", "familiar/kth"], [SIMILARITY], axis=1),
              helper.make_node("GreaterOrEqual", [SIMILARITY, "familiar/threshold"], [FAMILIAR])]
    constants = [numpy_helper.from_array(np.array([1], np.int64), "familiar/row_axis"),
                 numpy_helper.from_array(np.array(np.finfo(np.float32).tiny, np.float32), "familiar/tiny"),
                 numpy_helper.from_array(np.array(np.sqrt(len(stored)), np.float32), "familiar/root_layers"),
                 numpy_helper.from_array(np.array([len(views), -1, references.shape[1]], np.int64), "familiar/by_view"),
                 numpy_helper.from_array(np.array(views.index("original"), np.int64), "familiar/original"),
                 numpy_helper.from_array(np.ascontiguousarray(references.T), "familiar/references"),
                 numpy_helper.from_array(np.array([familiarity.neighbours], np.int64), "familiar/k"),
                 numpy_helper.from_array(np.array(familiarity.neighbours - 1, np.int64), "familiar/kth"),
                 numpy_helper.from_array(np.array(familiarity.threshold, np.float32), "familiar/threshold")]
    return nodes, constants
