"""Extraction sharded over the nodes of a Ray cluster, each node writing its own parts to the shared cache.

The cache root must be a folder every node sees at the same path (NFS, a mounted bucket). The driver
holds the cache's write lock and decides which images are missing; each node gets a share of them in
proportion to its CPUs, runs the ordinary local pipeline (`extract.extract`) as one Ray task pinned to it,
and returns its stats. Part names are unique per writer, so nodes never collide.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Literal

from automl.cache.extract import DEFAULT_BATCH_SIZE, CutGroups, ExtractStats, extract
from automl.cache.store import PartStore
from automl.engines import EngineChoice
from automl.errors import CacheError

if TYPE_CHECKING:
    from automl.backbones.base import Backbone

Executor = Literal["auto", "local", "ray"]


def alive_nodes() -> list[tuple[str, float]]:
    """(node id, CPUs) of every alive node of the connected Ray cluster that has CPUs."""
    import ray

    return [
        (node["NodeID"], float(node["Resources"].get("CPU", 0)))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU", 0) > 0
    ]


def use_cluster(executor: Executor) -> bool:
    """`ray` always; `auto` only when this process is connected to Ray and the cluster has several nodes."""
    if executor == "local":
        return False
    ray = sys.modules.get("ray")
    connected = ray is not None and ray.is_initialized()
    if executor == "ray":
        if not connected:
            raise CacheError("executor='ray' but Ray is not initialised", hint="call ray.init(address) first")
        return True
    return connected and len(alive_nodes()) > 1


def shard(groups: CutGroups, weights: list[float]) -> list[CutGroups]:
    """Split every group into len(weights) contiguous slices sized in proportion to `weights`."""
    total = sum(weights)
    shards: list[CutGroups] = [{} for _ in weights]
    for cuts, records in groups.items():
        start = 0
        cumulative = 0.0
        for index, weight in enumerate(weights):
            cumulative += weight
            end = round(len(records) * cumulative / total)
            if end > start:
                shards[index][cuts] = records[start:end]
            start = end
    return shards


def extract_on_cluster(
    store: PartStore,
    backbone: Backbone,
    weights: str,
    groups: CutGroups,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    engine: EngineChoice = "auto",
    deadline: float | None = None,
) -> ExtractStats:
    """Run `extract` on every node for its shard of `groups` and add up their stats.

    The backbone travels by name (the nodes load it from their own registry, so its plugin must be
    installed on every node); records travel as paths, which must be valid on the nodes. Each node stops at
    `deadline` (its own wall clock) with its finished parts committed; the stats add up what the nodes left.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes()
    task = ray.remote(num_cpus=1)(_extract_shard)
    refs = [
        task.options(
            name=f"extract {backbone.name}",  # the task's name in Ray's dashboard
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(str(store.root), backbone.name, weights, part, batch_size, engine, deadline)
        for (node_id, _cpus), part in zip(nodes, shard(groups, [cpus for _node, cpus in nodes]), strict=True)
        if part
    ]
    stats = ExtractStats()
    for shard_stats in ray.get(refs):
        stats.add(shard_stats)
    return stats


def _extract_shard(
    root: str,
    backbone_name: str,
    weights: str,
    groups: CutGroups,
    batch_size: int,
    engine: EngineChoice,
    deadline: float | None,
) -> ExtractStats:
    """One node's share, in a Ray worker: the same pipeline as a local extraction, without a progress bar."""
    from automl.backbones.registry import get_backbone

    backbone = get_backbone(backbone_name)
    return extract(PartStore(root), backbone, weights, groups, batch_size=batch_size, engine=engine, deadline=deadline)
