"""Extract on Ray Data and insert into Milvus in one job, then query with a filter.

A Ray Data pipeline reads the images, a pool of actors embeds them (each
actor builds the extractor once), and the driver streams the finished
batches into a :class:`~visualsim.indexes.milvus.MilvusIndex`, a few thousand
rows per insert, while later batches are still being extracted. Nothing
waits for the whole catalogue to be in memory.

Here Ray runs locally and Milvus is Milvus Lite (a ``.db`` file in ``--out``);
on a cluster pass ``--address auto`` (or ``ray://head:10001``) and
``--uri http://milvus:19530 --token-env MILVUS_TOKEN``: the same code runs.

Usage::

    python examples/ray_to_milvus.py --out /tmp/ray-milvus -n 200
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from visualsim import ColorHistogramExtractor, SyntheticProducts
from visualsim.extractors.base import extractor_from_config, extractor_spec
from visualsim.filters import Compare
from visualsim.indexes.milvus import MilvusIndex


class Embed:
    """Ray Data callable class: one extractor per actor, one call per batch."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.extractor = extractor_from_config(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        vectors = np.zeros((len(paths), self.extractor.dim), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        for part in self.extractor.iter_batches(
            range(len(paths)), image_of=paths.__getitem__, on_error="skip"
        ):
            vectors[part.items] = part.vectors
            ok[part.items] = True
        return {"id": batch["id"], "label": batch["label"], "vector": vectors, "ok": ok}


def extract_batches(
    items: list[dict[str, str]],
    extractor: Any,
    *,
    num_cpus: int | None = None,
    address: str | None = None,
    batch_size: int = 32,
    insert_batch: int = 5_000,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches of ``{"id", "label", "vector", "ok"}`` as Ray finishes them."""
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_items(items)
    ds.context.enable_progress_bars = False
    ds = ds.map_batches(
        Embed,
        fn_constructor_kwargs={"spec": extractor_spec(extractor)},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, int(ray.cluster_resources()["CPU"]))),
    )
    yield from ds.iter_batches(batch_size=insert_batch, batch_format="numpy")


def ray_to_milvus(
    items: list[dict[str, str]], index: MilvusIndex, extractor: Any, **kwargs: Any
) -> tuple[int, list[str]]:
    """Extract ``items`` on Ray and insert them into ``index``; return (inserted, failed ids)."""
    inserted, failed = 0, []
    for batch in extract_batches(items, extractor, **kwargs):
        ok = np.asarray(batch["ok"], dtype=bool)
        ids = [str(i) for i in batch["id"]]
        failed += [i for i, good in zip(ids, ok, strict=True) if not good]
        keep = np.flatnonzero(ok)
        if len(keep):
            index.add(
                np.asarray(batch["vector"])[keep],
                [ids[i] for i in keep],
                metadata=[{"label": str(batch["label"][i])} for i in keep],
            )
            inserted += len(keep)
    return inserted, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for images and the .db")
    parser.add_argument("-n", type=int, default=200, help="synthetic products to index")
    parser.add_argument("--uri", help="Milvus URI (default: OUT/shop.db, Milvus Lite)")
    parser.add_argument("--collection", default="shop")
    parser.add_argument("--token-env", help="environment variable holding the Milvus token")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args(argv)

    out: Path = args.out
    shop = out / "shop"
    if not shop.is_dir():
        SyntheticProducts(args.n, seed=0, size=64).write_folder(shop, label="category")
    items = [
        {"id": p.relative_to(shop).as_posix(), "path": str(p), "label": p.parent.name}
        for p in sorted(shop.rglob("*.jpg"))
    ]
    extractor = ColorHistogramExtractor()
    index = MilvusIndex(
        uri=args.uri or str(out / "shop.db"),
        collection=args.collection,
        token_env=args.token_env,
        fields={"label": "str"},
    )
    if args.uri is None:
        index.drop()  # this example's own Lite collection, from an earlier run
    inserted, failed = ray_to_milvus(
        items, index, extractor, num_cpus=args.num_cpus, address=args.address
    )
    print(f"inserted {inserted} vectors into Milvus collection {args.collection!r} at {index.uri}")
    print(f"failed: {failed}")

    query = items[0]
    vector = extractor.extract([query["path"]])
    scores, ids = index.search(vector, 3, where=Compare("label", "==", query["label"]))
    print(f"query: {query['id']} (only label == {query['label']!r})")
    for score, item_id in zip(scores[0], ids[0], strict=True):
        print(f"  {score:.3f}  {item_id}")
    index.save(out / "milvus-index")
    print(f"saved the index (connection, collection, ids digest) to {out / 'milvus-index'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
