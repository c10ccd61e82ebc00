"""``probes.optim``: the optimizer Trainer builds, chosen from the one optimizer table."""

from __future__ import annotations

import pytest

from planner.specs import Optim
from planner.stack.optimizers import Library, optimizer_info
from tests.conftest import needs_torch_stack

pytestmark = needs_torch_stack


def _model():
    from torch import nn

    return nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 8))


@pytest.mark.parametrize("optim", list(Optim), ids=lambda o: o.value)
def test_every_table_row_builds_what_it_says(optim: Optim) -> None:
    import torch

    from probes.optim import build_optimizer

    info = optimizer_info(optim)
    model = _model()
    calls = []

    def emulate(params, bits, paged, fp32_ids):
        calls.append((bits, paged, fp32_ids))
        return torch.optim.SGD(params, lr=1.0)

    opt = build_optimizer(model, optim, emulate_bnb=emulate)
    if info.library is Library.BITSANDBYTES:
        (bits, paged, fp32_ids), = calls
        embedding = {id(model[0].weight)}
        assert (bits, paged, fp32_ids) == (info.state_bits, info.paged, embedding if info.embedding_32bit_state else set())
        return
    assert not calls
    expected = {Optim.ADAMW: "AdamW", Optim.SGD: "SGD", Optim.ADAFACTOR: "Adafactor"}[optim]
    assert type(opt).__name__ == expected
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
