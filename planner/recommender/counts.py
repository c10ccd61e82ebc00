"""GPU counts the multi-GPU search tries: 1, 2, 4, 8 in one node, then whole nodes (16, 24, ...).

A leaf module (only ``profiles/parallel.json`` below it) so that :mod:`planner.recommender.request` can
validate ``--gpus`` / ``--max-gpus`` without importing the search.
"""

from __future__ import annotations

from planner.time.comm import comm_constants


def gpus_per_node() -> int:
    """GPUs in one node of a multi-node plan (``profiles/parallel.json`` ``comm.gpus_per_node``)."""
    return int(comm_constants()["gpus_per_node"])


def gpu_counts(max_gpus: int) -> list[int]:
    """1, 2, 4, 8 within a node, then whole nodes (16, 24, ...), all <= ``max_gpus``."""
    node = gpus_per_node()
    counts = [n for n in (1, 2, 4, 8) if n <= min(max_gpus, node)]
    if node not in counts and max_gpus >= node:
        counts.append(node)
    counts += list(range(2 * node, max_gpus + 1, node))
    return counts
