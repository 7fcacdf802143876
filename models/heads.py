"""Light heads fitted on stored features: softmax (multinomial logistic regression),
LightGBM and a small MLP (Dense 1024 ReLU + softmax, as in the seeds).

Each ``fit_*`` takes a :class:`~tlfs.models.fit_data.FitData` (a train and a
validation split: the validation split chooses the L2 strength / stops boosting / stops
training) and returns a :class:`Head` that predicts and saves itself without pickle;
:func:`load` reads a saved head back, to classify new images (pipeline/predict.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tlfs.models.errors import ModelError
from tlfs.models.fit_data import Examples, FitData, class_offsets
from tlfs.models.linear import LinearFit
from tlfs.models.names import HEADS

SOFTMAX_C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MIN_CALIBRATION_IMAGES = 200  # validation images below which the MLP's temperature is not fitted
TEMPERATURE_BOUNDS = (0.25, 4.0)


@dataclass
class Head:
    kind: str
    predict_proba: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    save: Callable[[Path], list[Path]] = field(repr=False)
    params: dict = field(default_factory=dict)
    val_accuracy: float = float("nan")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def _standardizer(X: np.ndarray, block_dims: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale. With ``block_dims`` (the widths of concatenated
    layers), each layer's block is also weighted by sqrt(narrowest / its width), so that
    every layer carries the same total variance: a 1280-d layer does not drown a 112-d one."""
    # float64 sums over slices of columns: a float64 copy of a wide X (90,000 x 10,240)
    # would take 7 GB
    mean, std = np.empty(X.shape[1], np.float64), np.empty(X.shape[1], np.float64)
    for start in range(0, X.shape[1], 1024):
        part = X[:, start:start + 1024].astype(np.float64)
        mean[start:start + 1024], std[start:start + 1024] = part.mean(axis=0), part.std(axis=0)
    mean = mean.astype(np.float32)
    std = np.where(std > 1e-6, std, 1.0)
    if block_dims and len(block_dims) > 1:
        if sum(block_dims) != X.shape[1]:
            raise ModelError(f"layer widths {block_dims} do not add up to {X.shape[1]} features")
        std = std / np.repeat([np.sqrt(min(block_dims) / d) for d in block_dims], block_dims)
    return mean, std.astype(np.float32)


@dataclass(frozen=True)
class LinearHead:
    """A fitted softmax head's arrays: the inputs' ``mean`` and ``std``, a logit per class
    ``present`` in training (``coef``, ``intercept``)."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    present: np.ndarray

    def shifted(self, offsets: np.ndarray | None) -> "LinearHead":
        """The same head with ``offsets`` (one per class, :func:`class_offsets`) added to its logits."""
        if offsets is None:
            return self
        return LinearHead(self.mean, self.std, self.coef, (self.intercept + offsets[self.present]).astype(np.float32),
                          self.present)

    def proba(self, classes: int) -> Callable[[np.ndarray], np.ndarray]:
        return _linear_proba(self.mean, self.std, self.coef, self.intercept, self.present, classes)

    def save(self, path: Path) -> Path:
        np.savez(path, mean=self.mean, std=self.std, coef=self.coef, intercept=self.intercept, classes=self.present)
        return path


def _fit_linear(data: FitData, log=print) -> tuple[LinearHead, LinearFit]:
    """The softmax head's arrays, fitted on ``data`` as it is (never balanced), and the fit's record."""
    from tlfs.models.linear import fit_path  # torch, imported when a head is fitted

    train, validation = data.train, data.validation
    mean, std = _standardizer(train.X, data.block_dims)
    present = np.unique(train.y)  # a class with no training image gets no logit (predicted never)
    standardized = FitData(Examples((train.X - mean) / std, np.searchsorted(present, train.y)),
                           Examples((validation.X - mean) / std, _indices_in(present, validation.y)), len(present))
    best = fit_path(standardized, SOFTMAX_C_GRID, log=log)
    return LinearHead(mean, std, best.coef, best.intercept, present), best


def fit_softmax(data: FitData, log=print) -> Head:
    """L2 strength chosen on the validation split along SOFTMAX_C_GRID, warm-started from
    strong to weak (models/linear.py: full-batch L-BFGS, float32); with ``data.balanced``,
    the training split's class shares then divided out of its probabilities."""
    linear, best = _fit_linear(data, log=log)
    offsets = class_offsets(data)
    linear = linear.shifted(offsets)
    proba = linear.proba(data.classes)
    acc = best.val_accuracy if offsets is None else _accuracy(proba, data.validation)

    def save(folder: Path) -> list[Path]:
        return [linear.save(folder / "softmax.npz")]

    return Head("softmax", proba, save, {"C": best.C, "standardized": True, "solver": "L-BFGS (PyTorch, float32)",
                                         "iterations": best.iterations, **_balance_params(offsets)}, acc)


def _accuracy(proba: Callable[[np.ndarray], np.ndarray], examples: Examples) -> float:
    return float((proba(examples.X).argmax(1) == examples.y).mean())


def _balance_params(offsets: np.ndarray | None) -> dict:
    """What a head's ``params`` record of :func:`class_offsets`."""
    if offsets is None:
        return {}
    return {"balanced": True, "class_offsets": [round(float(o), 4) for o in offsets]}


def _linear_proba(mean: np.ndarray, std: np.ndarray, coef: np.ndarray, intercept: np.ndarray, present: np.ndarray,
                  classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """The softmax head's probabilities over all ``classes`` (0 for a class absent from training)."""
    def proba(Xq: np.ndarray) -> np.ndarray:
        full = np.zeros((len(Xq), classes), np.float64)
        full[:, present] = _softmax(((Xq - mean) / std) @ coef.T + intercept)
        return full

    return proba


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities of ``logits``, stable for large ones."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _indices_in(present: np.ndarray, yv: np.ndarray) -> np.ndarray:
    """Labels as indices into ``present`` (-1, never predicted, where absent)."""
    position = np.searchsorted(present, yv).clip(0, len(present) - 1)
    return np.where(present[position] == yv, position, -1)


# Chosen for speed on CIFAR-10's 1280-d Lite0 features (2 cores): 63 histogram bins,
# column-wise histograms, 30% of the features per tree, half the rows per round.
LIGHTGBM_PARAMS = {
    "objective": "multiclass",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "max_bin": 63,
    "force_col_wise": True,
    "feature_fraction": 0.3,
    "bagging_fraction": 0.5,
    "bagging_freq": 1,
    "min_data_in_leaf": 20,
    "verbose": -1,
    "seed": 0,
}
LIGHTGBM_PATIENCE = 10  # rounds without a better validation loss before boosting stops


def fit_lightgbm(data: FitData, log=print) -> Head:
    """Gradient-boosted trees that start from the softmax head's scores (LightGBM's
    ``init_score``): the trees learn what the linear probe misses, so boosting stops
    after tens of rounds, not hundreds. From zero, trees on dense CNN features need
    ~200 rounds of 10 trees (minutes on a CPU) to reach the linear probe's accuracy.
    With ``data.balanced`` the class shares are divided out after boosting, through the
    softmax scores it starts from (a constant per class added to them is one added to
    its logits)."""
    import lightgbm as lgb

    linear, best = _fit_linear(data, log=log)
    (X, y), (Xv, yv), classes = (data.train.X, data.train.y), (data.validation.X, data.validation.y), data.classes

    scores = _log_scores(linear.proba(classes))
    params = {**LIGHTGBM_PARAMS, "num_class": classes}
    train = lgb.Dataset(X, label=y, init_score=scores(X), params={"max_bin": params["max_bin"]}, free_raw_data=True)
    valid = lgb.Dataset(Xv, label=yv, init_score=scores(Xv), reference=train)
    booster = lgb.train(params, train, num_boost_round=2000, valid_sets=[valid], valid_names=["validation"],
                        callbacks=[lgb.early_stopping(LIGHTGBM_PATIENCE, verbose=False), _logged_every(50, log)])
    best_iteration = booster.best_iteration or booster.current_iteration()
    offsets = class_offsets(data)
    initial = linear.shifted(offsets)
    proba = _boosted_proba(_log_scores(initial.proba(classes)), booster, best_iteration)
    acc = _accuracy(proba, data.validation)
    log(f"  lightgbm: {best_iteration} rounds on the softmax scores, validation accuracy {acc:.4f} "
        f"(softmax alone {best.val_accuracy:.4f})")

    def save(folder: Path) -> list[Path]:
        path = folder / "lightgbm.txt"
        booster.save_model(str(path), num_iteration=best_iteration)
        # the scores it boosts from: predictions are log softmax(npz) + the booster's raw score
        return [path, initial.save(folder / "lightgbm_init_softmax.npz")]

    return Head("lightgbm", proba, save, {**params, "best_iteration": best_iteration, "init_score": "softmax head",
                                          "softmax_C": best.C, **_balance_params(offsets)}, acc)


def _logged_every(period: int, log) -> Callable:
    """A LightGBM callback that hands the validation loss to ``log`` every ``period`` rounds
    (``lgb.log_evaluation`` prints through LightGBM's own logger, to stdout, where a command's
    output is its results)."""

    def callback(env) -> None:
        if (env.iteration + 1) % period == 0 and env.evaluation_result_list:
            name, metric, value = env.evaluation_result_list[0][:3]
            log(f"  lightgbm: round {env.iteration + 1}, {name} {metric} {value:.5f}")

    callback.order = 10  # where LightGBM's own log_evaluation runs
    return callback


def _log_scores(base_proba: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The scores boosting starts from: the softmax head's log probabilities."""
    return lambda Xq: np.log(np.clip(base_proba(Xq), 1e-12, None))


def _boosted_proba(scores: Callable[[np.ndarray], np.ndarray], booster, iterations: int | None
                   ) -> Callable[[np.ndarray], np.ndarray]:
    return lambda Xq: _softmax(scores(Xq) + booster.predict(Xq, num_iteration=iterations, raw_score=True))


# One layer: the seeds' Dense 1024, stopped by validation accuracy. Several layers: more
# regularised (dropout on the inputs too, label smoothing), on signed square roots of the
# features (power normalisation: pooled activations are heavy-tailed), and trained for a
# fixed 12 epochs of one-cycle learning rate instead of until validation stalls. Measured
# on CIFAR-10 with all 7 Lite0 layers (2 cores, `tlfs fit --layer all --head mlp`): the
# earlier settings (hidden 2048, batches of 256, patience 6) 85.5% in 332 s; these 85.6%
# in 89 s, and 86.7% in 166 s with the flipped view (8 epochs: 85.2% / 86.5%, 69 / 124 s;
# hidden 2048: no better and twice as slow). Wide inputs (over 4,096 features, as the 14
# layers of a _2x2 set: 10,240) cost the first layer 5x more per epoch, so they get hidden
# 768 and 4 epochs. Measured on efficientnet_lite0_2x2's CIFAR-10 set with flip (hidden x
# epochs -> validation / test accuracy, fit seconds; scripts/wide-mlp-bench.py): 768x4
# 87.98/87.80% in 149 s; 1024x3 87.86/87.81% in 140 s. First runs, before the
# normalisation worked in place: 768x4 87.96/87.91% in 185 s; 1024x3 87.90/87.72% in
# 192 s; 512x5 87.64/87.83% in 182 s; 1024x4 88.14/88.09% in 254 s; 512x7 88.16/88.04% in 266 s.
# Training's products in bfloat16 (a CPU with AVX512-BF16 or AMX) halve an epoch's time at
# the same accuracy; measured on efficientnet_lite2_2x2's set with flip (10,600 features):
# float32 768x4 88.02/88.60% in 306 s; bfloat16 768x4 88.18/88.54%, 768x8 88.54/89.05% in
# 277 s, 1024x6 88.74/89.17% in 232 s (the choice: best validation accuracy).
WIDE_FEATURES = 4096
MLP_SETTINGS = {
    "one_layer": {"hidden": 1024, "input_dropout": 0.0, "dropout": 0.3, "label_smoothing": 0.0, "patience": 3,
                  "batch": 2048, "lr": 3e-3, "power": 1.0, "one_cycle_epochs": 0},
    "several_layers": {"hidden": 1024, "input_dropout": 0.2, "dropout": 0.5, "label_smoothing": 0.1, "patience": 0,
                       "batch": 512, "lr": 2e-3, "power": 0.5, "one_cycle_epochs": 12},
    "wide_layers": {"hidden": 768, "input_dropout": 0.2, "dropout": 0.5, "label_smoothing": 0.1, "patience": 0,
                    "batch": 512, "lr": 2e-3, "power": 0.5, "one_cycle_epochs": 4},
    # where the CPU multiplies bfloat16 in hardware an epoch takes half the time: wider and longer
    "wide_layers_bf16": {"hidden": 1024, "input_dropout": 0.2, "dropout": 0.5, "label_smoothing": 0.1, "patience": 0,
                         "batch": 512, "lr": 2e-3, "power": 0.5, "one_cycle_epochs": 6, "bf16": True},
}


def mlp_settings(width: int, block_dims: list[int] | None) -> tuple[str, dict]:
    """Which of :data:`MLP_SETTINGS` a head on ``width`` features of ``block_dims`` layers gets."""
    if not block_dims or len(block_dims) < 2:
        return "one_layer", MLP_SETTINGS["one_layer"]
    if width <= WIDE_FEATURES:
        return "several_layers", MLP_SETTINGS["several_layers"]
    name = "wide_layers_bf16" if bf16_native() else "wide_layers"
    return name, MLP_SETTINGS[name]


def bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles), where
    the MLP's matrix products take about half the time of float32's."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def power_normalize(X: np.ndarray, power: float) -> np.ndarray:
    """Signed power ``sign(x) |x|^power``, as a new float32 array (a copy for power 1):
    the one new array, which the MLP then standardizes in place (wide inputs take GBs)."""
    out = np.abs(X, dtype=np.float32)
    if power != 1.0:
        np.power(out, np.float32(power), out=out)
    return np.copysign(out, X, out=out)


def _standardize_in_place(Z: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    Z -= mean
    Z /= std
    return Z


def fit_mlp(data: FitData, log=print, epochs: int = 40, seed: int = 0, settings: dict | None = None) -> Head:
    """``settings``: one of :data:`MLP_SETTINGS`' kind (default: :func:`mlp_settings`'s
    choice; a benchmark passes its own)."""
    import torch
    from torch import nn

    kind, settings = ("given", settings) if settings else mlp_settings(data.width, data.block_dims)
    compute = "bfloat16" if settings.get("bf16") and bf16_native() else "float32"
    # training's products in bfloat16, weights, optimizer and predictions in float32 (autocast)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if compute == "bfloat16" else contextlib.nullcontext
    hidden, patience, power, cycle = settings["hidden"], settings["patience"], settings["power"], settings["one_cycle_epochs"]
    torch.manual_seed(seed)
    X, Xv = power_normalize(data.train.X, power), power_normalize(data.validation.X, power)
    mean, std = _standardizer(X, data.block_dims)
    Z = torch.from_numpy(_standardize_in_place(X, mean, std))  # our own copies, made above
    Zv = torch.from_numpy(_standardize_in_place(Xv, mean, std))
    del X, Xv
    target, yv = torch.from_numpy(data.train.y.astype(np.int64)), data.validation.y
    net = _mlp_net(Z.shape[1], hidden, data.classes, settings["input_dropout"], settings["dropout"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings["lr"], weight_decay=1e-2)
    epochs = cycle or epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings["lr"], total_steps=cycle * -(-len(Z) // settings["batch"]), pct_start=0.15) if cycle else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings["label_smoothing"])
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    best_acc, best_state, best_epoch, stale = -1.0, None, 0, 0
    for epoch in range(1, epochs + 1):
        net.train()
        for batch in torch.randperm(len(Z), generator=generator).split(settings["batch"]):
            optimizer.zero_grad()
            with autocast():
                loss = loss_fn(net(Z[batch]).float(), target[batch])
            loss.backward()
            optimizer.step()
            if schedule:
                schedule.step()
        net.eval()
        with torch.no_grad():
            acc = float((net(Zv).argmax(1).numpy() == yv).mean())
        log(f"  mlp: epoch {epoch}{f'/{epochs}' if cycle else ''}, validation accuracy {acc:.4f} "
            f"({time.perf_counter() - started:.0f}s)")
        if acc > best_acc or (cycle and epoch == epochs):  # a one-cycle run ends on its last epoch
            best_acc, best_epoch, stale = acc, epoch, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        elif not cycle:
            stale += 1
            if stale >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    log(f"  mlp: best epoch {best_epoch}, validation accuracy {best_acc:.4f}")
    with torch.no_grad():
        temperature = fitted_temperature(net(Zv).float().numpy(), yv)
        net[4].weight /= temperature  # folded into the last layer: saved, read back and exported as it is
        net[4].bias /= temperature
        offsets = class_offsets(data)
        if offsets is not None:  # likewise, after the calibration: it divides the calibrated probabilities
            net[4].bias += torch.from_numpy(offsets)
    log(f"  mlp: probabilities calibrated on the validation images, temperature {temperature:.3f}")

    proba = _mlp_proba(net, mean, std, power)
    if offsets is not None:
        best_acc = _accuracy(proba, data.validation)
        log(f"  mlp: class shares divided out, validation accuracy {best_acc:.4f}")

    def save(folder: Path) -> list[Path]:
        weights = folder / "mlp.pt"
        torch.save(net.state_dict(), weights)
        scaler = folder / "mlp_scaler.npz"  # inputs: (sign(x) |x|^power - mean) / std
        np.savez(scaler, mean=mean, std=std, power=np.float32(power))
        return [weights, scaler]

    return Head("mlp", proba, save, {**settings, "settings": kind, "best_epoch": best_epoch, "optimizer": "AdamW",
                                      "compute": compute, "temperature": round(temperature, 4),
                                      **_balance_params(offsets)}, best_acc)


def fitted_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T that makes ``softmax(logits / T)`` fit the labels ``y`` best (the
    least log loss): temperature scaling (Guo et al., 2017), which leaves every prediction's
    class as it is and makes its probability mean how often it is right. 1 (left as it is)
    with fewer than ``MIN_CALIBRATION_IMAGES``; within ``TEMPERATURE_BOUNDS``."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    if len(y) < MIN_CALIBRATION_IMAGES:
        return 1.0
    rows = np.arange(len(y))

    def log_loss(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y].mean())

    low, high = np.log(TEMPERATURE_BOUNDS)
    return float(np.exp(minimize_scalar(log_loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4}).x))


def _mlp_net(width: int, hidden: int, classes: int, input_dropout: float = 0.0, dropout: float = 0.0):
    from torch import nn

    return nn.Sequential(nn.Dropout(input_dropout), nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, classes))


def _mlp_proba(net, mean: np.ndarray, std: np.ndarray, power: float) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def proba(Xq: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(_standardize_in_place(power_normalize(Xq, power), mean, std))).softmax(1).numpy()

    return proba


FITTERS = {"softmax": fit_softmax, "lightgbm": fit_lightgbm, "mlp": fit_mlp}
# the files each head's save writes, which :func:`load` reads back
SAVED = {"softmax": ("softmax.npz",), "lightgbm": ("lightgbm.txt", "lightgbm_init_softmax.npz"),
         "mlp": ("mlp.pt", "mlp_scaler.npz")}
assert tuple(FITTERS) == HEADS, "models/names.py lists the heads"


def fit(kind: str, data: FitData, log=print) -> tuple[Head, float]:
    """Fit head ``kind`` on ``data``; the head and the seconds it took."""
    if kind not in FITTERS:
        raise ModelError(f"unknown head {kind!r}: use one of {', '.join(HEADS)}")
    started = time.perf_counter()
    head = FITTERS[kind](data, log=log)
    return head, time.perf_counter() - started


def load(kind: str, files: dict[str, bytes], classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """The ``predict_proba`` of a head of ``kind`` over ``classes`` classes, from the files its
    save wrote (:data:`SAVED`: name -> bytes): the same probabilities as the fitted head's."""
    if kind not in SAVED:
        raise ModelError(f"unknown head {kind!r}: use one of {', '.join(HEADS)}")
    missing = [name for name in SAVED[kind] if name not in files]
    if missing:
        raise ModelError(f"the {kind} head's {', '.join(missing)} is missing")
    if kind == "mlp":
        import torch

        state = torch.load(io.BytesIO(files["mlp.pt"]), weights_only=True)
        net = _mlp_net(state["1.weight"].shape[1], state["1.weight"].shape[0], state["4.weight"].shape[0])
        net.load_state_dict(state)
        net.eval()
        scaler = np.load(io.BytesIO(files["mlp_scaler.npz"]))
        return _mlp_proba(net, scaler["mean"], scaler["std"], float(scaler["power"]))
    linear_file = "softmax.npz" if kind == "softmax" else "lightgbm_init_softmax.npz"
    saved = np.load(io.BytesIO(files[linear_file]))
    linear = _linear_proba(saved["mean"], saved["std"], saved["coef"], saved["intercept"], saved["classes"], classes)
    if kind == "softmax":
        return linear
    import lightgbm as lgb

    booster = lgb.Booster(model_str=files["lightgbm.txt"].decode())
    return _boosted_proba(_log_scores(linear), booster, None)  # saved with its best iteration only


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=2))
    return path
