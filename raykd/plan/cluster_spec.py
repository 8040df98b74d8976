"""The worker node types of a Ray cluster-launcher file, and how many nodes of one a set of asks needs.

A node type's CPUs and GPUs are its ``resources`` (cluster.yaml states them, so no cloud lookup is
needed); its per-GPU and host memory come from the labels ``raykd.io/gpu-memory-gib`` and
``raykd.io/host-memory-gib`` when present (the launcher only passes labels on to ``ray start``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from raykd.config import ConfigError

GPU_MEMORY_LABEL, HOST_MEMORY_LABEL = "raykd.io/gpu-memory-gib", "raykd.io/host-memory-gib"


@dataclass(frozen=True)
class NodeType:
    name: str
    cpus: float
    gpus: float
    max_workers: int
    gpu_memory_gib: float | None  # None: not stated in the file
    host_memory_gib: float | None


def _label(labels: dict, key: str) -> float | None:
    return float(labels[key]) if key in labels else None


def read_node_types(path: str | Path) -> list[NodeType]:
    """Worker node types of a cluster-launcher YAML, in file order (the head type is left out: raykd's
    cluster.yaml gives it ``CPU: 0`` so nothing is scheduled there). A file that cannot be read or has
    no ``available_node_types`` is a ConfigError."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the cluster file: {str(e).splitlines()[0]}") from None
    types = (data or {}).get("available_node_types")
    if not isinstance(types, dict) or not types:
        raise ConfigError(f"{path}: no available_node_types")
    head, cap = data.get("head_node_type"), int(data.get("max_workers", 0))
    out = []
    for name, spec in types.items():
        if name == head:
            continue
        resources, labels = spec.get("resources") or {}, spec.get("labels") or {}
        out.append(NodeType(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)),
                            int(spec.get("max_workers", cap)),  # Ray's default: the global max_workers
                            _label(labels, GPU_MEMORY_LABEL), _label(labels, HOST_MEMORY_LABEL)))
    return out


def holds(node: NodeType, ask: dict[str, float]) -> bool:
    """Whether one ask (``{"CPU": c, "GPU": g}``, all on one node) fits an empty node of this type."""
    return ask.get("CPU", 0) <= node.cpus and ask.get("GPU", 0) <= node.gpus


def _fill(node: NodeType, asks: list[dict[str, float]]) -> tuple[list[int], dict[str, float]]:
    """Indices of ``asks`` one empty node takes, first-fit in order, and the resources they use."""
    free, taken = {"CPU": node.cpus, "GPU": node.gpus}, []
    for i, ask in enumerate(asks):
        if all(ask.get(k, 0) <= free[k] for k in free):
            taken.append(i)
            free = {k: free[k] - ask.get(k, 0) for k in free}
    return taken, {"CPU": node.cpus - free["CPU"], "GPU": node.gpus - free["GPU"]}


def launch_score(node: NodeType, asks: list[dict[str, float]]) -> tuple:
    """How Ray's autoscaler ranks a node type for pending asks (``_resource_based_utilization_scorer`` in
    ray/autoscaler/_private/resource_demand_scheduler.py): no GPU node for CPU-only work, then the number
    of requested resource kinds the node has, then the smallest and the mean of ``total * util**3`` over
    its resources, ``util`` being the share one node filled with the asks would use. So a type with fewer
    idle CPUs per GPU ask wins, and equal scores go to the greater type name: the autoscaler picks by fit,
    not by stage."""
    _, used = _fill(node, asks)
    totals = {"CPU": node.cpus, "GPU": node.gpus}
    wanted = {k for a in asks for k, v in a.items() if v > 0}
    scores = [v * (used[k] / v) ** 3 for k, v in totals.items() if v >= 1]
    gpu_ok = not (node.gpus > 0 and "GPU" not in wanted)
    return (gpu_ok, sum(1 for k, v in totals.items() if v >= 1 and k in wanted), min(scores, default=0),
            sum(scores) / max(1, len(scores)))


def place(asks: list[dict[str, float]], node_types: list[NodeType]) -> tuple[dict[str, int], dict[str, int], int]:
    """Nodes launched per type to hold all ``asks`` at once, the way the autoscaler grows a cluster from
    zero: one node at a time, of the best ``launch_score`` type that still has ``max_workers`` room and
    holds the largest remaining ask, filled first-fit (largest asks first). Returns nodes per type, asks
    placed per type, and how many asks found no room."""
    remaining = sorted(asks, key=lambda a: (a.get("GPU", 0), a.get("CPU", 0)), reverse=True)
    nodes: dict[str, int] = {}
    placed: dict[str, int] = {}
    while remaining:
        room = [t for t in node_types if nodes.get(t.name, 0) < t.max_workers and holds(t, remaining[0])]
        if not room:
            break
        best = max(room, key=lambda t: (launch_score(t, remaining), t.name))  # Ray: sorted((score, name))[-1]
        taken, _ = _fill(best, remaining)
        nodes[best.name] = nodes.get(best.name, 0) + 1
        placed[best.name] = placed.get(best.name, 0) + len(taken)
        remaining = [a for i, a in enumerate(remaining) if i not in set(taken)]
    return nodes, placed, len(remaining)
