"""Which sources a command reads for a dataset: those given; the default dataset's
configured ones (``TLFS_CIFAR10_SOURCE``); else those the dataset's newest committed set
was read from, as its lineage records them, so that a second backbone, a fine-tuning run
or an incremental extraction of a dataset need not be told its sources again."""

from __future__ import annotations

from typing import Callable

from tlfs.pipeline.config import DEFAULT_SOURCE_DATASET, Settings
from tlfs.pipeline.sources.uris import recorded_uris


def sources_for(settings: Settings, dataset: str, given: list[str] | None, log: Callable[[str], None] = print) -> list[str]:
    """``given``, or the configured default, or the sources the store's newest set of
    ``dataset`` recorded (said in a line); the configuration's error where there are none."""
    recorded = None if given or dataset == DEFAULT_SOURCE_DATASET else recorded_sources(settings.store, dataset)
    if recorded is None:
        return settings.sources_for(dataset, given)  # given, the default, or its error: the dataset needs --source
    uri, version, sources = recorded
    log(f"reading the sources {', '.join(sources)} that {uri} (version {version}) was extracted from "
        "(--source names others)")
    return sources


def recorded_sources(store: str, dataset: str) -> tuple[str, int, list[str]] | None:
    """``(set uri, version, source URIs)`` of the newest committed set of ``dataset`` in
    ``store``, of any backbone; None where the store holds none of it (or the store is unreadable
    as such: a missing folder)."""
    from tlfs.features.feature_set import committed_sets
    from tlfs.features.layout import check_name

    sets = committed_sets(store, check_name("dataset", dataset))
    sets = [s for s in sets if s.dataset == dataset and s.manifest.get("lineage", {}).get("sources")]
    if not sets:
        return None
    newest = max(sets, key=lambda s: s.manifest["committed_at"])
    lineage = newest.manifest["lineage"]
    given = lineage.get("source_uris") or recorded_uris(lineage["sources"])
    return newest.uri, newest.version, list(given)
