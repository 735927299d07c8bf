"""Pass 1 of dedup over one shard: what the decision needs of every document, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coderforge.config import RecipeConfig
from coderforge.data import minhash
from coderforge.data.dedup.exact import content_hash
from coderforge.records import Document, read_shard


@dataclass
class DocKey:
    """What the driver needs of a document to decide: order, id and the keep-rule attributes."""

    id: str
    order: int
    path: str
    length: int
    stars: float


def _stars(doc: Document) -> float:
    for key in ("stars", "max_stars_count", "star_events_count"):
        v = doc.meta.get(key)
        if isinstance(v, int | float):
            return float(v)
    return 0.0


def fingerprint_shard(cfg: RecipeConfig, uri: str) -> dict:
    """Keys, exact hashes and (near-dedup) signatures of one shard's documents, in order."""
    d = cfg.dedup
    ids, paths, lengths, stars, hashes, sigs = [], [], [], [], [], []
    for doc in read_shard(uri):
        ids.append(doc.id)
        paths.append(doc.path)
        lengths.append(len(doc.content))
        stars.append(_stars(doc))
        hashes.append(content_hash(doc.content))
        if d.near:
            sigs.append(minhash.text_signature(doc.content, d.ngram, d.num_perm, d.seed))
    sig = np.stack(sigs) if sigs else np.zeros((0, d.num_perm), dtype=np.uint32)
    return {"ids": ids, "paths": paths, "lengths": lengths, "stars": stars, "hashes": hashes, "sigs": sig}


def doc_keys(metas: list[dict]) -> list[DocKey]:
    """The :class:`DocKey` of every document of ``metas`` (fingerprints of consecutive shards), in order."""
    keys: list[DocKey] = []
    for meta in metas:
        for i, doc_id in enumerate(meta["ids"]):
            keys.append(DocKey(doc_id, len(keys), meta["paths"][i], meta["lengths"][i], meta["stars"][i]))
    return keys
