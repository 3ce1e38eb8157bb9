"""The decoded-image cache: the tests that start processes (the rest, and what they share, are in
tests/unit/trainables/test_cache.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from tests import formats_fixtures as fx
from trainables.data import cache
from trainables.data.base import worker_started
from trainables.data.cache import ensure_cache
from trainables.data.formats import READERS


@pytest.mark.slow  # the fork server and its workers
def test_the_cache_is_decoded_by_workers_from_the_fork_server_as_in_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the build runs inside a trial, whose process holds other libraries' threads: its workers
    # start from the fork server as the trial's loaders' do (docs/reliability.md)
    samples = READERS["cub"](fx.write_cub(tmp_path / "data", per_class=4)).train
    loaders: list[DataLoader[Any]] = []

    class Recorded(DataLoader):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            loaders.append(self)

    monkeypatch.setattr(cache, "DataLoader", Recorded)
    by_workers = ensure_cache(samples, 16, tmp_path / "w", "cub-train", workers=2)
    in_process = ensure_cache(samples, 16, tmp_path / "p", "cub-train", workers=0)
    assert by_workers is not None and in_process is not None
    assert [loader.multiprocessing_context.get_start_method() if loader.num_workers else None
            for loader in loaders] == ["forkserver", None]
    assert loaders[0].worker_init_fn is worker_started  # a worker that dies leaves its stack
    assert np.array_equal(np.load(by_workers), np.load(in_process))
