"""Multi-GPU plans: :mod:`planner.parallel.spec` (strategy, GPUs, offload) and :mod:`planner.parallel.shard` (the per-GPU ledger)."""
