"""Several indexes searched together as one: :class:`ShardedIndex`."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .. import persistence as P
from ..errors import CatalogError, ConfigError
from ..validation import check_int
from .base import INDEXES, BaseIndex, Index, load_index, read_manifest, register_index

MAX_SHARDS = 4096
"""Most shards a :class:`ShardedIndex` may have."""


@register_index("sharded")
class ShardedIndex(BaseIndex):
    """Vectors spread over ``n_shards`` indexes, searched in parallel, results merged.

    Vector number ``i`` (in insertion order, counting removed ones) goes to
    shard ``i % n_shards``, so shards stay balanced. A search asks every shard
    for its top ``k`` (in threads: FAISS releases the GIL) and merges them by
    score, ties in insertion order. With exact shards (the default, ``"flat"``)
    the merged result is the same as one :class:`~visualsim.indexes.FlatIndex`
    over everything; with approximate shards each shard's recall carries over.

    Sharding buys parallel queries over many cores and smaller pieces to
    build, save and rebuild (an HNSW ``remove`` rebuilds only the shards
    touched); it costs ``n_shards`` times the per-query overhead and
    ``n_shards * k`` candidates to merge.

    Parameters
    ----------
    n_shards
        How many shards.
    shard
        Registered index name used for every shard (``"flat"``, ``"hnsw"``, ...;
        not ``"milvus"``: a Milvus collection shards itself).
    shard_params
        Keyword configuration of each shard (JSON-safe), e.g. ``{"M": 16}``.
    parallel
        Search shards in threads (``True``) or one after another.
    dim
        Dimension, if known before the first ``add``.
    """

    # declared for every shard kind: exact shards give exact results, but a
    # catalogue still keeps (and saves) a sharded index rather than scoring its store
    is_exact = False
    retrains = False
    filters_natively = False

    def __init__(
        self,
        *,
        n_shards: int = 4,
        shard: str = "flat",
        shard_params: Mapping[str, Any] | None = None,
        parallel: bool = True,
        dim: int | None = None,
    ) -> None:
        check_int("n_shards", n_shards, minimum=1, maximum=MAX_SHARDS)
        if not isinstance(shard, str):
            raise ConfigError(f"shard must be a registered index name, got {shard!r}")
        if shard == "sharded":
            raise ConfigError("shards of a ShardedIndex cannot themselves be sharded")
        if shard == "milvus":  # its shards would share one collection (and a saved config
            # would choose their server when a rebuild makes new ones): Milvus shards itself
            raise ConfigError(
                "shard='milvus' is refused: a Milvus collection is one index that Milvus "
                "shards on the server; use MilvusIndex directly"
            )
        if shard_params is not None and not isinstance(shard_params, Mapping):
            raise ConfigError(f"shard_params must be a mapping, got {shard_params!r}")
        super().__init__(dim=dim)
        self.n_shards = n_shards
        self.shard = shard
        self.shard_params = None if shard_params is None else dict(shard_params)
        self.parallel = bool(parallel)
        self.shards_: list[Index] = [self._new_shard() for _ in range(n_shards)]

    def _new_shard(self) -> Index:
        params = dict(self.shard_params or {})
        if self._dim is not None:
            params.setdefault("dim", self._dim)
        shard: Index = INDEXES.build(self.shard, params)
        return shard

    def _groups(self, labels: np.ndarray) -> list[np.ndarray]:
        owner = labels % self.n_shards
        return [np.flatnonzero(owner == s) for s in range(self.n_shards)]

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        for shard, rows in zip(self.shards_, self._groups(labels), strict=True):
            if len(rows):
                shard.add(x[rows], labels[rows].tolist())

    def _remove(self, labels: np.ndarray) -> None:
        for shard, rows in zip(self.shards_, self._groups(labels), strict=True):
            if len(rows):
                shard.remove(labels[rows].tolist())

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        live = [s for s in self.shards_ if len(s)]

        def one(shard: Index) -> tuple[np.ndarray, np.ndarray]:
            scores, ids = shard.search(q, k)
            return scores, np.asarray(ids, dtype=np.int64).reshape(scores.shape)

        if self.parallel and len(live) > 1:
            with ThreadPoolExecutor(max_workers=len(live)) as pool:
                parts = list(pool.map(one, live))
        else:
            parts = [one(s) for s in live]
        scores = np.concatenate([p[0] for p in parts], axis=1)
        labels = np.concatenate([p[1] for p in parts], axis=1)
        order = np.lexsort((labels, -scores), axis=-1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(labels, order, axis=1)

    def _save_state(self, directory: Path) -> dict[str, Any]:
        names = [f"shard-{i:03d}" for i in range(self.n_shards)]
        for shard, name in zip(self.shards_, names, strict=True):
            shard.save(directory / name)
        return {"shards": names}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        where = str(directory / "manifest.json")
        names = P.field_list(where, "state.shards", state.get("shards"), max_len=MAX_SHARDS)
        if len(names) != self.n_shards:
            raise CatalogError(
                f"{where}: lists {len(names)} shards but n_shards is {self.n_shards}; "
                "the index is damaged"
            )
        if len({str(n) for n in names}) != len(names):
            raise CatalogError(f"{where}: a shard is listed twice")
        shards: list[Index] = []
        held: list[np.ndarray] = []
        for s, name in enumerate(names):
            if not isinstance(name, str) or "/" in name:
                raise CatalogError(
                    f"{where}: shard name {str(name)[:80]!r} is not a plain folder name"
                )
            folder = P.safe_child(directory, name, kind="dir")
            manifest = read_manifest(folder, verify=False)  # the outer manifest hashed its files
            if manifest["name"] != self.shard:
                raise CatalogError(
                    f"{folder} holds a {str(manifest['name'])[:40]!r} index, not the "
                    f"{self.shard!r} shards the manifest promises"
                )
            shard = load_index(folder, verify=False)
            if len(shard) and shard.dim != self._dim:
                raise CatalogError(f"{folder} holds {shard.dim}-d vectors, not {self._dim}-d")
            labels = np.asarray(shard.ids, dtype=np.int64)
            if len(labels) and (labels % self.n_shards != s).any():
                raise CatalogError(f"{folder} holds labels of another shard; the index is damaged")
            shards.append(shard)
            held.append(labels)
        everything = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
        if not np.array_equal(everything, self._ids.labels):
            raise CatalogError(
                f"{directory}: the shards hold other labels than the {len(self)} stored ids; "
                "the index is damaged"
            )
        self.shards_ = shards


__all__ = ["ShardedIndex"]
