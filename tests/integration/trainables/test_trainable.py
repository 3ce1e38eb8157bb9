from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from tests.conftest import TINY
from trainables.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainables.trainable import train_rra


@pytest.mark.slow
def test_runs_under_a_real_ray_tune(tmp_path: Path) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(train_rra, {"cpu": 1}),
            param_space={**TINY, "epochs": 2, "recursion_steps": tune.choice([1, 2])},
            tune_config=tune.TuneConfig(num_samples=2, metric="val_acc", mode="max"),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="t", verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert not results.errors
    for result in results:
        assert result.metrics["epoch"] == 2 and result.metrics["training_iteration"] == 2
        assert result.checkpoint is not None
        with result.checkpoint.as_directory() as folder:
            assert load_checkpoint(Path(folder) / CHECKPOINT_NAME)["epoch"] == 2
