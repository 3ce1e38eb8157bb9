"""benchmarks/diagnostics/worker_soak.py: the start method it says its loaders use is the one they use."""

from __future__ import annotations

import pytest
import torch

from benchmarks.diagnostics.worker_soak import starting
from tests.conftest import tiny_config
from trainables.loop import make_loader


@pytest.mark.parametrize(("method", "used"), [("trial", "forkserver"), ("fork", "fork")])
def test_the_loaders_start_their_workers_by_the_method_asked(method: str, used: str) -> None:
    dataset = torch.utils.data.TensorDataset(torch.zeros(2))
    with starting(method):
        loader = make_loader(dataset, tiny_config(num_workers=1), torch.device("cpu"), False)
    assert loader.multiprocessing_context.get_start_method() == used
    after = make_loader(dataset, tiny_config(num_workers=1), torch.device("cpu"), False)
    assert after.multiprocessing_context.get_start_method() == "forkserver"  # only within it
