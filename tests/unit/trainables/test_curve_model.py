"""trainables.curve_model, the replays' generative model: a table drawn from a known model has
that model's truth, replays draw noise that neither the table's runs nor the truth used, a seed's
effect is shared by the configurations trained with it, the fit recovers a model's spreads, and
`benchmarks.tables.curves check` finds a right model right on seeds it was not fitted on."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from benchmarks.tables import curves
from trainables.curve_model import CurveModel
from trainables.curve_table import CurveTable

EPOCHS = 5
SEED_SD, RESIDUAL_SD = 0.06, 0.03


def _world(configs: int = 12) -> tuple[CurveModel, dict[str, dict]]:
    """A made-up model over the efficiency space's configurations: better near crop 0.4, large
    recursion steps learn later; every metric a simple function of the accuracy."""
    values = curves.configurations(configs)
    means = {}
    for name, v in values.items():
        top = 0.3 if not v.get("local_stream", True) else 0.8 - abs(v["crop_scale"] - 0.4)
        acc = [top * min(1.0, e / (1 + v.get("recursion_steps", 1) / 3)) for e in range(1, EPOCHS + 1)]
        means[name] = {"val_acc": acc, "val_acc_global": acc, "val_acc_local": acc, "train_acc": acc,
                       "val_loss": [1 - a for a in acc], "train_loss": [1 - a for a in acc]}
    return CurveModel.simple(means, SEED_SD, RESIDUAL_SD, correlation=0.8, grid=1000), values


def _drawn(tmp_path: Path, seeds: int) -> tuple[CurveModel, CurveTable]:
    model, values = _world()
    return model, CurveTable(curves.write_drawn(model, values, seeds, tmp_path / "drawn.parquet", "test"))


def test_a_drawn_table_has_its_models_truth_and_replays_draw_from_that_model(tmp_path: Path) -> None:
    model, table = _drawn(tmp_path, seeds=3)
    assert table.drawn and table.epochs == EPOCHS and table.seeds == [0, 1, 2] and len(table.values) == 14
    assert all(table.true_final(n) == model.true_final(n) for n in table.values)
    assert all(table.standard_error(n) == 0.0 for n in table.values)
    assert table.metadata["true_val_acc"]["paper"] == pytest.approx(model.true_final("paper"), abs=1e-5)
    # the model travels in the file: a replay draws what the model draws, on the validation grid
    assert table.model.draw("c003", 17) == model.draw("c003", 17)
    assert all(round(r["val_acc"] * 1000, 6).is_integer() for r in model.draw("c003", 17))
    # no replay is one of the table's own runs (another salt), though both are drawn for seeds 0-2
    for (name, seed), run in table.curves.items():
        replay = [table.metrics(table.match(table.values[name], seed), e) for e in range(1, EPOCHS + 1)]
        assert [r["val_acc"] for r in replay] != [r["val_acc"] for r in run]


def test_replays_average_to_the_truth_and_share_their_seeds_effect(tmp_path: Path) -> None:
    _, table = _drawn(tmp_path, seeds=1)
    names = ["c001", "c004"]
    finals = {n: [table.metrics(table.match(table.values[n], s), EPOCHS)["val_acc"] for s in range(400)]
              for n in names}
    spread = (SEED_SD ** 2 + RESIDUAL_SD ** 2) ** 0.5
    for name in names:  # within 4 standard errors of the mean of 400 draws (the draws are fixed)
        assert abs(statistics.fmean(finals[name]) - table.true_final(name)) < 4 * spread / 400 ** 0.5
    # same seed: the seed's effect cancels in a difference; other seeds: it does not
    same = [a - b for a, b in zip(finals["c001"], finals["c004"], strict=True)]
    crossed = [a - b for a, b in zip(finals["c001"], finals["c004"][1:] + finals["c004"][:1], strict=True)]
    assert statistics.stdev(same) == pytest.approx(2 ** 0.5 * RESIDUAL_SD, rel=0.15)
    assert statistics.stdev(crossed) == pytest.approx(2 ** 0.5 * spread, rel=0.15)


def test_the_fit_recovers_a_models_mean_and_spreads(tmp_path: Path) -> None:
    model, table = _drawn(tmp_path, seeds=30)
    fitted = CurveModel.fit(table.curves, ["val_acc"], grid=1000)
    acc = fitted.metrics["val_acc"]
    assert statistics.fmean(acc.sigma.values()) == pytest.approx(RESIDUAL_SD, rel=0.15)
    seed_final_sd = sum(x * x for x in acc.seed_factor[-1]) ** 0.5
    assert seed_final_sd == pytest.approx(SEED_SD, rel=0.35)  # 30 seeds estimate it
    # each mean within 3 standard errors of its truth (the seeds' effects are estimated away)
    assert all(abs(acc.mean[n][-1] - model.true_final(n)) < 3 * RESIDUAL_SD / 30 ** 0.5 + 1e-3 for n in table.values)


def test_the_check_finds_a_right_model_right_on_seeds_it_was_not_fitted_on(tmp_path: Path) -> None:
    _, table = _drawn(tmp_path, seeds=12)
    found = curves.check(table.path)
    assert found["held_out_seeds"] == [3, 5, 7, 9, 11] and found["held_out_runs"] == 5 * 14
    assert found["fitted_on_runs"] == 7 * 14 and found["configs_with_held_out_runs"] == 14
    for share in ("final_value_coverage", "paired_difference_coverage"):
        assert found[share]["95%"] >= 0.85 and found[share]["50%"] == pytest.approx(0.5, abs=0.2)
    assert found["drawn_paths"]["step_sd_points"] == pytest.approx(found["held_out_paths"]["step_sd_points"], rel=0.3)


def test_a_table_drawn_from_another_keeps_its_configurations_costs_and_truth(tmp_path: Path) -> None:
    model, values = _world()
    recorded = CurveTable(curves.write_drawn(model, values, 3, tmp_path / "r.parquet", "test",
                                             costs={"paper": {"cost_flops_per_image": 5.0}}))
    drawn = CurveTable(curves.draw(recorded.path, 2, tmp_path / "d.parquet", "draw"))
    assert drawn.values == recorded.values and drawn.seeds == [0, 1] and drawn.drawn
    assert drawn.costs["paper"] == {"cost_flops_per_image": 5.0}
    assert drawn.metadata["drawn"]["from"] == "test" and drawn.metadata["command"] == "draw"
    assert drawn.true_final("paper") == pytest.approx(recorded.true_final("paper"))
