"""A saved head as an ONNX graph: ``features`` (float32, N x width) in, ``probabilities``
(float32, N x classes) out, the same probabilities as :func:`tlfs.models.heads.load`'s
from the same files (:data:`~tlfs.models.heads.SAVED`), up to float32 rounding.

- softmax: ``softmax(((x - mean) / std) @ coef.T + intercept)``, spread over every class
  (0 for a class that had no training image);
- lightgbm: the softmax head's log probabilities (clipped at 1e-12) plus the trees' raw
  scores, through a softmax: the trees as one ``ai.onnx.ml`` TreeEnsembleRegressor;
- mlp: ``sign(x) |x|^power``, standardized, Linear, ReLU, Linear, softmax.

The trees are written from LightGBM's own dump of the booster (``dump_model``). Each
threshold becomes the largest float32 not above LightGBM's double one, so that a float32
feature goes the way LightGBM sends it, bit for bit; onnxmltools' converter would bring
skl2onnx along and end in its own softmax, where this head adds the trees' scores to the
linear head's first.
"""

from __future__ import annotations

import io

import numpy as np

from tlfs.models.errors import ModelError
from tlfs.models.heads import SAVED

OPSET = 18  # the backbones' (models/export.py), so that a head joins their graphs
ML_OPSET = 3  # ai.onnx.ml's TreeEnsembleRegressor with float thresholds, as onnxruntime runs it
IR_VERSION = 8
FEATURES, PROBABILITIES = "features", "probabilities"
LOG_FLOOR = 1e-12  # the lightgbm head's clip of the softmax probabilities before their log (models/heads.py)
LIGHTGBM_ZERO = np.float32(1e-35)  # LightGBM's kZeroThreshold: a value this close to 0 is 0 to its trees


def head_graph(kind: str, files: dict[str, bytes], classes: int, width: int):
    """The ONNX model of a head of ``kind`` over ``classes`` classes on ``width`` features,
    from the files its save wrote (name -> bytes)."""
    import onnx
    from onnx import helper

    if kind not in SAVED:
        raise ModelError(f"unknown head {kind!r}: use one of {', '.join(SAVED)}")
    missing = [name for name in SAVED[kind] if name not in files]
    if missing:
        raise ModelError(f"the {kind} head's {', '.join(missing)} is missing")
    graph = _Graph()
    if kind == "mlp":
        _mlp(graph, files, classes)
    else:
        linear = np.load(io.BytesIO(files["softmax.npz" if kind == "softmax" else "lightgbm_init_softmax.npz"]))
        probabilities = _linear(graph, FEATURES, linear, classes)
        if kind == "softmax":
            graph.rename(probabilities, PROBABILITIES)
        else:
            _boosted(graph, probabilities, files["lightgbm.txt"].decode(), classes)
    model = helper.make_model(
        helper.make_graph(graph.nodes, f"tlfs_{kind}_head",
                          [helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, ["batch", width])],
                          [helper.make_tensor_value_info(PROBABILITIES, onnx.TensorProto.FLOAT, ["batch", classes])],
                          graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        ir_version=IR_VERSION, producer_name="tlfs")
    onnx.checker.check_model(model, full_check=True)
    return model


class _Graph:
    """Nodes and constants being added, each with a name of its own."""

    def __init__(self) -> None:
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"head_{stem}_{self._count}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attributes) -> str:
        from onnx import helper

        output = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attributes))
        return output

    def rename(self, tensor: str, to: str) -> None:
        """The node that makes ``tensor`` makes ``to`` instead (the graph's output)."""
        for node in self.nodes:
            node.output[:] = [to if name == tensor else name for name in node.output]


def _standardized(graph: _Graph, x: str, mean: np.ndarray, std: np.ndarray) -> str:
    return graph.node("Div", [graph.node("Sub", [x, graph.constant("mean", mean.astype(np.float32))]),
                              graph.constant("std", std.astype(np.float32))])


def _linear(graph: _Graph, x: str, saved, classes: int) -> str:
    """The softmax head's probabilities over every class (models/heads._linear_proba)."""
    logits = graph.node("Gemm", [_standardized(graph, x, saved["mean"], saved["std"]),
                                 graph.constant("coef", saved["coef"].astype(np.float32)),
                                 graph.constant("intercept", saved["intercept"].astype(np.float32))], transB=1)
    probabilities = graph.node("Softmax", [logits], axis=-1)
    present = saved["classes"].astype(np.int64)
    if len(present) == classes:
        return probabilities
    # a class with no training image has no logit: its probability is 0, the others' where they belong
    spread = np.zeros((len(present), classes), np.float32)
    spread[np.arange(len(present)), present] = 1.0
    return graph.node("MatMul", [probabilities, graph.constant("spread", spread)])


def _boosted(graph: _Graph, linear_probabilities: str, model_text: str, classes: int) -> None:
    import lightgbm as lgb

    scores = graph.node("Log", [graph.node("Clip", [linear_probabilities, graph.constant("floor", np.float32(LOG_FLOOR))])])
    booster = lgb.Booster(model_str=model_text)
    if booster.num_model_per_iteration() != classes:
        raise ModelError(f"the lightgbm head scores {booster.num_model_per_iteration()} classes, not {classes}")
    graph.rename(graph.node("Softmax", [graph.node("Add", [scores, _trees(graph, FEATURES, booster.dump_model())])],
                            axis=-1), PROBABILITIES)


def _trees(graph: _Graph, x: str, dump: dict) -> str:
    """The raw scores of the booster ``dump`` describes, one column a class. LightGBM reads
    a value within its zero threshold (1e-35) as 0 before its trees see it: so does this."""
    tiny = graph.node("LessOrEqual", [graph.node("Abs", [x]), graph.constant("zero_threshold", np.float32(LIGHTGBM_ZERO))])
    zeroed = graph.node("Where", [tiny, graph.constant("zero", np.float32(0.0)), x])
    return graph.node("TreeEnsembleRegressor", [zeroed], domain="ai.onnx.ml", **tree_attributes(dump))


def trees_model(dump: dict, width: int):
    """The booster of ``dump`` (``Booster.dump_model()``) as an ONNX model of its own:
    ``features`` (float32, N x width) in, its raw scores (``Booster.predict(raw_score=True)``) out."""
    import onnx
    from onnx import helper

    graph = _Graph()
    graph.rename(_trees(graph, FEATURES, dump), "raw_scores")
    return helper.make_model(
        helper.make_graph(graph.nodes, "lightgbm_trees",
                          [helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, ["batch", width])],
                          [helper.make_tensor_value_info("raw_scores", onnx.TensorProto.FLOAT,
                                                         ["batch", dump["num_tree_per_iteration"]])],
                          graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        ir_version=IR_VERSION, producer_name="tlfs")


def _mlp(graph: _Graph, files: dict[str, bytes], classes: int) -> None:
    import torch

    state = torch.load(io.BytesIO(files["mlp.pt"]), weights_only=True)
    scaler = np.load(io.BytesIO(files["mlp_scaler.npz"]))
    x, power = FEATURES, float(scaler["power"])
    if power != 1.0:  # sign(x) |x|^power (models/heads.power_normalize)
        magnitude = graph.node("Pow", [graph.node("Abs", [x]), graph.constant("power", np.float32(power))])
        x = graph.node("Mul", [magnitude, graph.node("Sign", [x])])
    x = _standardized(graph, x, scaler["mean"], scaler["std"])
    for layer, then in (("1", "Relu"), ("4", None)):  # nn.Sequential(Dropout, Linear, ReLU, Dropout, Linear)
        x = graph.node("Gemm", [x, graph.constant("weight", state[f"{layer}.weight"].float().numpy()),
                                graph.constant("bias", state[f"{layer}.bias"].float().numpy())], transB=1)
        x = graph.node(then, [x]) if then else x
    if state["4.weight"].shape[0] != classes:
        raise ModelError(f"the mlp head scores {state['4.weight'].shape[0]} classes, not {classes}")
    graph.rename(graph.node("Softmax", [x], axis=-1), PROBABILITIES)


def tree_attributes(dump: dict) -> dict:
    """A LightGBM booster's trees (``Booster.dump_model()``) as the attributes of one
    TreeEnsembleRegressor whose target ``k`` sums the raw scores of class ``k``'s trees.
    Each node is listed before its children, so every tree's root is its node 0."""
    ensemble = _Ensemble(dump["num_tree_per_iteration"])
    for number, tree in enumerate(dump["tree_info"]):
        ensemble.add_tree(number, tree["tree_structure"])
    return {**ensemble.nodes, **ensemble.targets, "n_targets": ensemble.per_iteration, "aggregate_function": "SUM",
            "post_transform": "NONE"}


class _Ensemble:
    """The TreeEnsembleRegressor's node and target lists, filled one tree at a time."""

    def __init__(self, per_iteration: int) -> None:
        self.per_iteration = per_iteration
        self.nodes = {key: [] for key in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                                          "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids",
                                          "nodes_missing_value_tracks_true")}
        self.targets = {key: [] for key in ("target_treeids", "target_nodeids", "target_ids", "target_weights")}
        self.tree, self.first = 0, 0

    def add_tree(self, tree: int, root: dict) -> None:
        self.tree, self.first = tree, len(self.nodes["nodes_nodeids"])
        self._visit(root)

    def _add(self, feature: int, value: float, mode: str, missing_true: bool) -> int:
        """A new node of this tree, its id its position in the tree; its children are set once known."""
        number = len(self.nodes["nodes_nodeids"]) - self.first
        for key, item in zip(self.nodes, (self.tree, number, feature, value, mode, 0, 0, int(missing_true))):
            self.nodes[key].append(item)
        return number

    def _children(self, number: int, true: int, false: int) -> None:
        self.nodes["nodes_truenodeids"][self.first + number] = true
        self.nodes["nodes_falsenodeids"][self.first + number] = false

    def _visit(self, node: dict) -> int:
        if "split_feature" not in node:
            number = self._add(0, 0.0, "LEAF", False)
            target = (self.tree, number, self.tree % self.per_iteration, float(node["leaf_value"]))  # a float, or onnx takes 0 for INTS
            for key, item in zip(self.targets, target):
                self.targets[key].append(item)
            return number
        if node["decision_type"] != "<=":
            raise ModelError(f"the lightgbm head's tree {self.tree} has a {node['decision_type']!r} split: "
                             "only numerical (<=) splits are exported")
        feature, threshold = node["split_feature"], _float32_at_most(node["threshold"])
        if node["missing_type"] == "Zero":  # LightGBM sends a zero (or NaN) the default way, before comparing
            zero = self._add(feature, 0.0, "BRANCH_EQ", True)
            compare = self._add(feature, threshold, "BRANCH_LEQ", node["default_left"])
            left, right = self._visit(node["left_child"]), self._visit(node["right_child"])
            self._children(zero, left if node["default_left"] else right, compare)
            self._children(compare, left, right)
            return zero
        # NaN: "None" compares it as 0 (so it goes left where 0 would); "NaN" sends it the default way
        missing_left = node["default_left"] if node["missing_type"] == "NaN" else 0.0 <= node["threshold"]
        number = self._add(feature, threshold, "BRANCH_LEQ", missing_left)
        self._children(number, self._visit(node["left_child"]), self._visit(node["right_child"]))
        return number


def _float32_at_most(threshold: float) -> float:
    """The largest float32 not above ``threshold``: for a float32 x, ``x <= threshold``
    (LightGBM compares in double) exactly when ``x <= `` it."""
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)
