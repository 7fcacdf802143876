"""Tests run extractions with plain keyword arguments: :func:`run_extract` sorts them into
the request (what to make) and the run's options (how), as ``tlfs extract`` does."""

from __future__ import annotations

import dataclasses

from tlfs.models.runtime import resolve_runtime
from tlfs.pipeline import extract
from tlfs.pipeline.extract import ExtractionRequest, RunOptions

_OPTIONS = {f.name for f in dataclasses.fields(RunOptions)}


def run_extract(dataset: str, sources, backbone: str, store: str, model_store: str, log=lambda *_: None, **kw) -> dict:
    options = {k: kw.pop(k) for k in list(kw) if k in _OPTIONS}
    runtime = {k: v for k in ("device", "precision", "batch_size") if (v := kw.pop(k, None)) is not None}
    if runtime:  # as --device, --precision and --batch-size give it
        kw["runtime"] = resolve_runtime(**runtime)
    request = ExtractionRequest(dataset, sources, backbone, store, model_store, **kw)
    return extract.run(request, RunOptions(**options), log=log)
