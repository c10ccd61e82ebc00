"""Multi-GPU seam: how a parallel strategy divides the per-GPU memory ledger (only ``none`` so far)."""
