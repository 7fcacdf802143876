"""Planning an extraction: the backbone exported (or reused), the dataset indexed, its
images cut into shards, against the set's newest version where it can build on it
(pipeline/incremental.py); then the plan saved in the set's staging, under a lease.
Nothing is extracted here."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Callable

from tlfs.features import layout, versions
from tlfs.features.codecs import DEFAULT_CODEC
from tlfs.features.errors import PlanReplaced
from tlfs.features.layout import ORIGINAL
from tlfs.features.leases import Lease, LeaseTerms, hold, replaced_message
from tlfs.features.manifest import remove_superseded
from tlfs.features.schema import estimated_bytes
from tlfs.features.storage import atomic_write_json, digest_of, free_bytes, read_json
from tlfs.models.artifact import Artifact
from tlfs.models.quantize import saturation_notice
from tlfs.models.session import check_layers
from tlfs.models.variants import with_int8, with_variants
from tlfs.pipeline.dataset_index import DatasetIndex, Entry, sample
from tlfs.pipeline.indexing import (alike_classes_notice, build_index, check_sources, left_out_notice, refused_notice,
                                    repeated_rows_notice, splits_notice)
from tlfs.pipeline.errors import PipelineError, SampleShrinksSet
from tlfs.pipeline.image_decode import FULL_DEPTH, bit_depth_of, decode_rule
from tlfs.pipeline.incremental import Base, Changes, diff, fingerprints_digest, left_out_by_sample, load_base
from tlfs.pipeline.plan import ExtractionRequest, Plan, Shard
from tlfs.pipeline.first_images import first_images_notices
from tlfs.pipeline.staging import entries_reader, save_entries


def plan(request: ExtractionRequest, log: Callable[[str], None] = print) -> Plan:
    """Export (or reuse) the backbone, index the dataset and fix the shards. Nothing is
    written to the set: :func:`save_plan` does, under a lease."""
    r = request
    check_sources(r.dataset, r.sources)  # a mistyped path is told at once, not after an export
    artifact = resolve_artifact(r.backbone, r.model_store, r.weights, r.random_weights, log)
    if r.runtime.precision == "int8":
        artifact = with_int8(artifact, log)
        if notice := saturation_notice():
            log(notice)
    layers = check_layers(artifact, list(r.layers) if r.layers else None)
    started = time.perf_counter()
    source = build_index(r.dataset, list(r.sources), splits=list(r.splits) if r.splits else None, cache_dir=r.cache_dir)
    index = sample(source, r.limit) if r.limit else source
    per_split = Counter(e.split for e in index.entries)
    log(f"indexed {len(index.entries)} images of {r.dataset} ({', '.join(f'{s} {per_split[s]}' for s in index.splits())}) "
        f"in {time.perf_counter() - started:.1f}s{left_out_notice(index)}{refused_notice(index)}"
        f"{repeated_rows_notice(index)}{alike_classes_notice(index)}"
        f"{'' if r.splits else splits_notice(index)}")  # splits asked for by name are what the user wants
    set_uri = layout.set_uri(r.store, r.dataset, artifact.version)
    layer_dims = {layer: artifact.card["layers"][layer] for layer in layers}
    newest = versions.read_newest(set_uri)  # kept by the plan: its commit need not parse it again
    bit_depth = _bit_depth(r.bit_depth, newest, log)
    for notice in first_images_notices(index, bit_depth, r.cache_dir):
        log(notice)
    graph = artifact.graph_sha256(r.runtime.precision)
    base = (load_base(set_uri, newest and newest.manifest, r.runtime, layer_dims, r.views, bit_depth, graph, log)
            if r.incremental else None)
    if base is None:
        shards, entries = cut_shards(index, r.shard_size)
        origins: dict[int, dict] = {}
        changes = Changes.fresh(len(index.entries))
    else:
        if r.limit:
            _refuse_a_shrinking_sample(base, index, source, r.limit, set_uri)
        increment = diff(index, base)
        new_shards, new_entries = cut_shards(DatasetIndex(index.name, index.sources, index.classes, increment.new_entries),
                                             r.shard_size, first=len(increment.shards))
        shards, entries, origins = increment.shards + new_shards, {**increment.entries, **new_entries}, increment.origins
        changes = increment.changes
        unchanged = _unchanged_base(set_uri, base, increment, index, r, newest)
        if unchanged is not None:
            log(f"nothing changed since version {base.version}: its plan {base.plan_id} is this run's")
            return unchanged
        log(f"against version {base.version}: {changes.added} images new, {changes.changed} changed, "
            f"{changes.removed} removed, {changes.reused} reused ({changes.shards_reused} shards as they are, "
            f"{changes.shards_derived} copied without their removed or changed rows)")
    changes = changes.with_extracted(sum(s.images for s in shards if s.number not in origins))
    needed = estimated_bytes(changes.extracted * len(r.views), layer_dims.values(), r.codec)
    if notice := space_notice(needed, free_bytes(set_uri)):
        log(notice)
    identity = {
        "version": artifact.version,
        "runtime": r.runtime.identity(),  # one set never mixes CPU and GPU, fp32 and fp16 shards
        # nor two int8 graphs: each model store quantizes its own, its bytes the quantizer's version's
        **({"graph": graph} if r.runtime.precision == "int8" else {}),
        "decode": decode_rule(bit_depth),  # nor images decoded by two rules
        "layers": layers,
        **index.identity(),
        "shards": [s.to_json() for s in shards],
        **({"views": list(r.views)} if r.views != (ORIGINAL,) else {}),  # unchanged ids for plans of one view
        **({"codec": r.codec} if r.codec != DEFAULT_CODEC else {}),  # and for plans in the default codec
        **({"base": base.plan_id, "fingerprints": fingerprints_digest(index.entries),
            "origins": {str(n): o["kind"] for n, o in origins.items()}} if base else {}),
    }
    return Plan(
        plan_id=digest_of(identity, layout.PLAN_ID_DIGITS),
        dataset=r.dataset,
        set_uri=set_uri,
        artifact=artifact,
        layers=tuple(layers),
        splits=tuple(index.splits()),
        limit=r.limit,
        runtime=r.runtime,
        shard_size=r.shard_size,
        cache_dir=r.cache_dir,
        shards=tuple(shards),
        sources=tuple(index.sources),
        classes=tuple(index.classes),
        index_rejects=tuple(index.rejects),
        views=r.views,
        codec=r.codec,
        bit_depth=bit_depth,
        base=base.to_json() if base else None,
        origins=origins,
        changes=changes,
        entries=entries,
        newest=newest,
        source_uris=tuple(r.sources),
    )


def _bit_depth(asked: int | None, newest: versions.ManifestRead | None, log: Callable[[str], None]) -> int:
    """The bits greyscale 16-bit samples hold: as asked, else as the set's newest version
    read them (a scheduled run that does not say keeps the set's rule), else 16."""
    if asked is not None:
        return asked
    kept = bit_depth_of(newest.manifest["lineage"]) if newest else FULL_DEPTH
    if kept != FULL_DEPTH:
        log(f"greyscale 16-bit samples read as {kept}-bit, as version {newest.manifest['version']} read them "
            "(--bit-depth says otherwise)")
    return kept


def _refuse_a_shrinking_sample(base: Base, index: DatasetIndex, source: DatasetIndex, limit: int, set_uri: str) -> None:
    """A limited run over a set that holds more of the source would commit a version
    without them (a sample of an already larger set, as ``--limit 100`` after a full run):
    refused, with the ways to do what was meant."""
    left_out = left_out_by_sample(base, index, source)
    if left_out:
        raise SampleShrinksSet(
            f"{set_uri} version {base.version} holds {left_out:,} images that --limit {limit} leaves out and the source "
            "still holds: a sample would remove them from the set. Run without --limit to add to the set, with --full "
            "(DAG param incremental: false) to make it this sample, or give another --store for a sample of its own")


def space_notice(needed: int, free: int | None) -> str | None:
    """What to say before a run whose features will not fit the store's disk (``free``
    bytes; None: an object store): it would stop when the disk is full."""
    if free is None or needed <= free:
        return None
    return (f"the run writes about {_size(needed)} of features and the store's disk has {_size(free)} free: "
            "it will stop when the disk is full, keeping the shards it finished")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _unchanged_base(set_uri: str, base, increment, index: DatasetIndex, r: ExtractionRequest,
                    newest: versions.ManifestRead | None) -> Plan | None:
    """The base version's own plan, if this run asks for exactly what it holds: the same
    images with the same fingerprints, from the same sources (then a scheduled run over
    an unchanged source writes nothing, and its commit adds no version)."""
    c = increment.changes
    if c.added or c.changed or c.removed or c.shards_derived or len(increment.shards) != len(base.shards):
        return None
    base_plan = load_plan(set_uri, base.plan_id)
    same = ([s.checksum for s in base_plan.sources] == [s.checksum for s in index.sources]
            and list(base_plan.index_rejects) == list(index.rejects) and base_plan.limit == r.limit)
    if not same:
        return None
    return dataclasses.replace(base_plan, changes=c.with_extracted(0), newest=newest)


def cut_shards(index: DatasetIndex, shard_size: int, first: int = 0) -> tuple[list[Shard], dict[int, list[Entry]]]:
    """Each split's images (in the index's order, which follows the sources') in shards
    of at most ``shard_size``. Where a source can only be streamed (a compressed tar),
    shards follow its own bounds: it starts a shard of its own, so that no shard streams
    through a compressed archive for a few of its images. Sources read by offset, row
    group or file (folders, zips, uncompressed tars, Parquet) are cut anywhere."""
    shards: list[Shard] = []
    entries: dict[int, list[Entry]] = {}
    for split in index.splits():
        in_split = [e for e in index.entries if e.split == split]
        bounds = [0]
        for run_start, run_stop in _source_runs(in_split):
            streamed = _streamed(index, in_split[run_start])
            if streamed and run_start > bounds[-1] and run_stop - bounds[-1] > shard_size:
                bounds.append(run_start)  # close the open shard where this archive begins
            while run_stop - bounds[-1] > shard_size:
                bounds.append(bounds[-1] + shard_size)
        bounds.append(len(in_split))
        for start, stop in zip(bounds, bounds[1:]):
            entries[first + len(shards)] = in_split[start:stop]
            shards.append(Shard(first + len(shards), split, start, stop))
    return shards, entries


STREAMED = ("imagefolder-tar", "webdataset-tar")  # compressed ones: read from their start


def _streamed(index: DatasetIndex, entry: Entry) -> bool:
    """Whether ``entry``'s source can only be read from its start: a compressed tar (one
    indexed before its compression was recorded has no offsets)."""
    info = index.sources[entry.source]
    return info.format in STREAMED and (entry.offset < 0 or info.compression not in (None, "tar"))


def _source_runs(entries: list[Entry]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, e in enumerate(entries):
        if runs and entries[runs[-1][0]].source == e.source:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def save_plan(p: Plan, held: Lease) -> None:
    """Write the shards' entries, then ``plan.json``, into the set's staging; ``held``
    is the caller's lease on it. A reused shard's record is the plan's: nothing more.
    First, what earlier commits set aside (superseded plans' staging) is deleted: that
    costs what the set is, as planning does, not what a run changed, as a commit should."""
    assert held.plan_id == p.plan_id, "the lease must be on the plan being saved"
    remove_superseded(p.set_uri)
    where = save_entries(p)
    atomic_write_json(layout.plan_uri(p.set_uri, p.plan_id), {**p.to_json(), **where})


def plan_task(request: ExtractionRequest, lease: LeaseTerms = LeaseTerms(), log: Callable[[str], None] = print) -> Plan:
    """Planning as a task of its own (a DAG's): the plan is saved under a lease that
    lingers ``lease.linger`` seconds, so that its shard tasks, queued, still find it."""
    p = plan(request, log)
    with hold(p.set_uri, p.plan_id, lease, plan_must_exist=False) as held:
        save_plan(p, held)
    return p


def resolve_artifact(backbone: str, model_store: str, weights: str | None, random_weights: bool, log) -> Artifact:
    from tlfs.models.artifact import read_card
    from tlfs.models.names import BACKBONES, TIMM_PREFIX, is_backbone

    if not is_backbone(backbone):
        card = read_card(f"{model_store.rstrip('/')}/{backbone}")
        if card is None:
            raise PipelineError(f"{backbone!r} is neither a backbone ({', '.join(BACKBONES)}, {TIMM_PREFIX}<model>) "
                                f"nor an exported version in {model_store}")
        if weights or random_weights:
            raise PipelineError(f"{backbone} is an exported version: it has its weights; drop --weights/--random-weights")
        log(f"using exported version {backbone}" + (f" (fine-tuned from {card['parent']['version']})" if card.get("parent") else ""))
        return with_variants(Artifact(f"{model_store.rstrip('/')}/{backbone}", card), log)
    from tlfs.models.export import export  # imports torch only where the version must be exported

    return export(backbone, model_store, weights=weights, random_weights=random_weights, log=log)


def load_plan(set_uri: str, plan_id: str) -> Plan:
    """The saved plan; each shard's entries are read when a task asks for them."""
    try:
        saved = read_json(layout.plan_uri(set_uri, plan_id))
    except FileNotFoundError:
        raise PlanReplaced(replaced_message(set_uri, plan_id)) from None
    read = entries_reader(set_uri, saved)

    def read_entries(number: int) -> list:
        try:
            return read(number)
        except FileNotFoundError:
            raise PlanReplaced(replaced_message(set_uri, plan_id)) from None

    return Plan.from_json(saved, read_entries)
