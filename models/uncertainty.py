"""Which unlabelled images a person should label next: those a head is least sure of, spread
over what the images look like (``tlfs label-next``).

The choice is cluster-margin, after Citovsky et al., "Batch Active Learning at Scale"
(NeurIPS 2021): the images whose two likeliest classes are closest (the smallest margin)
are the candidates; they are grouped by their features, and each group gives its least
sure image. Margin alone picks many near-copies of one confusion (a batch of the same
cat-dog look-alikes); the groups spread a batch over the different confusions."""

from __future__ import annotations

import numpy as np

CANDIDATES_PER_PICK = 10  # the least sure images considered for each one chosen (Citovsky et al. use 10)


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Each row's probability of its likeliest class less that of its second (1: sure; 0: a
    toss-up between two classes)."""
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities), np.float32)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return (top_two[:, 1] - top_two[:, 0]).astype(np.float32)


def choose_to_label(margin: np.ndarray, features: np.ndarray, count: int,
                    candidates_per_pick: int = CANDIDATES_PER_PICK, seed: int = 0) -> np.ndarray:
    """The rows to label next, least sure first: of the ``candidates_per_pick * count`` rows
    of smallest ``margin``, k-means on their ``features`` makes ``count`` groups, and each
    group gives the row of smallest margin. Where there are ``count`` rows or fewer, every
    row. ``seed`` fixes k-means' start, so the same pool gives the same choice."""
    if count < 1:
        raise ValueError(f"count {count}: at least 1")
    if len(margin) != len(features):
        raise ValueError(f"{len(margin)} margins for {len(features)} rows of features")
    by_margin = np.argsort(margin, kind="stable")
    if len(margin) <= count:
        return by_margin
    candidates = by_margin[:candidates_per_pick * count]
    groups = _groups(features[candidates], count, seed)
    # candidates are in margin order, so a group's first member is its least sure
    _, first = np.unique(groups, return_index=True)
    return candidates[np.sort(first)]


def _groups(features: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Each row's group of ``count`` by k-means (one start: the candidates are few and the
    groups need only spread the choice, not be the best clustering)."""
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # identical rows: fewer groups than asked, filled below
        warnings.simplefilter("ignore", ConvergenceWarning)
        groups = KMeans(n_clusters=count, n_init=1, random_state=seed).fit_predict(np.asarray(features, np.float32))
    if len(np.unique(groups)) < count:  # identical rows: fewer distinct groups than asked; fill by margin
        return _filled(groups, count)
    return groups


def _filled(groups: np.ndarray, count: int) -> np.ndarray:
    """Groups where k-means left some empty (rows identical to others): each row beyond its
    group's first, in order, takes a group of its own until there are ``count``."""
    groups = groups.copy()
    seen, spare = set(), iter(sorted(set(range(count)) - set(groups.tolist())))
    for row, group in enumerate(groups):
        if group in seen:
            group_of_its_own = next(spare, None)
            if group_of_its_own is None:
                break
            groups[row] = group_of_its_own
        seen.add(groups[row])
    return groups
