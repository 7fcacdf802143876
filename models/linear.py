"""Multinomial logistic regression (the softmax head) by full-batch L-BFGS in PyTorch,
float32, on the GPU where there is one, along a path of L2 strengths.

The objective is scikit-learn's ``LogisticRegression`` (``C * sum(loss) + ||W||^2 / 2``,
intercept not penalised) divided by ``C * n``: the mean cross-entropy plus
``||W||^2 / (2 C n)``, so a ``C`` means what it means there. A linear probe is a convex
problem: each ``C`` starts from the previous solution (strong to weak), so later fits
need few iterations, and the path stops once validation accuracy has fallen for
``patience`` steps in a row past its best (one, by default: on a convex path the
validation accuracy rises to one peak and falls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.models.fit_data import FitData


@dataclass
class LinearFit:
    C: float
    val_accuracy: float
    coef: np.ndarray  # [classes, d] float32
    intercept: np.ndarray  # [classes] float32
    iterations: int


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def fit_path(data: FitData, grid: tuple[float, ...], log: Callable[[str], None] = print, max_iter: int = 50,
             patience: int = 1) -> LinearFit:
    """The best fit on ``data``'s validation split along ``grid`` (ascending C). Its
    labels are class indices ``0..classes-1``; standardise its features first."""
    import torch
    import torch.nn.functional as F

    device, classes, yv = _device(), data.classes, data.validation.y
    X = torch.from_numpy(np.ascontiguousarray(data.train.X, np.float32)).to(device)
    Xv = torch.from_numpy(np.ascontiguousarray(data.validation.X, np.float32)).to(device)
    target = torch.from_numpy(data.train.y.astype(np.int64)).to(device)
    W = torch.zeros(classes, X.shape[1], device=device, requires_grad=True)
    b = torch.zeros(classes, device=device, requires_grad=True)
    best: LinearFit | None = None
    worse = 0
    for C in grid:
        penalty = 1.0 / (2.0 * C * len(X))
        optimizer = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-5,
                                      tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def objective():
            optimizer.zero_grad()
            loss = F.cross_entropy(X @ W.T + b, target) + penalty * (W * W).sum()
            loss.backward()
            return loss

        optimizer.step(objective)
        iterations = optimizer.state[optimizer._params[0]]["n_iter"]
        with torch.no_grad():
            accuracy = float(((Xv @ W.T + b).argmax(1).cpu().numpy() == yv).mean())
        log(f"  softmax C={C:g}: validation accuracy {accuracy:.4f} ({iterations} L-BFGS iterations)")
        if best is None or accuracy > best.val_accuracy:
            best = LinearFit(C, accuracy, W.detach().cpu().numpy().copy(), b.detach().cpu().numpy().copy(), iterations)
            worse = 0
        else:
            worse += 1
            if worse >= patience:
                break
    return best
