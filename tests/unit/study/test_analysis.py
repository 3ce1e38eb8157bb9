"""Report statistics on hand-made results tables with known answers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from study.reporting import analysis
from study.reporting.document import Document
from study.spaces import StudySettings, load_space

ROOT = Path(__file__).resolve().parents[3]


def _space(max_epochs: int = 3, grace: int = 1, rf: float = 3.0) -> Any:
    space = load_space(str(ROOT / "search_spaces" / "ablation.yaml"))
    settings = StudySettings(max_epochs=max_epochs, grace_period=grace, reduction_factor=rf, num_samples=10)
    return dataclasses.replace(space, study=settings)


def _table(trials: list[tuple[str, str, dict[str, Any], list[float]]], max_t: int = 3) -> pd.DataFrame:
    """Rows per epoch from (name, kind, params, curve) with curve[i] the val_acc at epoch i+1."""
    rows = []
    for name, kind, params, curve in trials:
        full = {"recursion_steps": None, "crop_scale": None, "attention_temperature": None, **params}
        for epoch, value in enumerate(curve, 1):
            rows.append({"trial_id": name, "name": name, "kind": kind, "epochs_run": len(curve),
                         "outcome": "completed" if len(curve) >= max_t else "stopped_early",
                         **full, "epoch": epoch, "val_acc": value, "test_acc": None})
    return pd.DataFrame(rows)


def test_rungs_are_asha_milestones_and_max_t() -> None:
    from study.policies.asha import rungs

    assert rungs(StudySettings(max_epochs=15, grace_period=2, reduction_factor=3)) == [2, 6, 15]
    assert rungs(StudySettings(max_epochs=3, grace_period=1, reduction_factor=2)) == [1, 2, 3]
    assert rungs(StudySettings(max_epochs=4, grace_period=4, reduction_factor=2)) == [4]


def test_factor_statistics_compare_trials_only_at_the_same_epoch() -> None:
    # T=2: one trial stopped after epoch 1 with a high early value, one that ran to the end.
    table = _table([
        ("a", "search", {"recursion_steps": 2, "crop_scale": 0.3}, [0.9]),
        ("b", "search", {"recursion_steps": 2, "crop_scale": 0.3}, [0.1, 0.2, 0.5]),
        ("c", "search", {"recursion_steps": 4, "crop_scale": 0.9}, [0.2, 0.3, 0.4]),
        ("base", "baseline", {}, [0.3, 0.3, 0.3]),
    ])
    stats = analysis.factor_table(table, _space())
    t2 = stats[(stats.factor == "recursion_steps") & (stats.level == "2")].set_index("rung")
    assert t2.loc[1, "trials"] == 2 and t2.loc[1, "reached_max_t"] == 1
    assert t2.loc[1, "n"] == 2 and t2.loc[1, "mean"] == pytest.approx(0.5) and t2.loc[1, "best"] == 0.9
    # at max_t only b counts: its 0.5, not a mean with a's epoch-1 0.9 (which would be 0.7)
    assert t2.loc[3, "n"] == 1 and t2.loc[3, "mean"] == pytest.approx(0.5) and math.isnan(t2.loc[3, "sd"])
    t4 = stats[(stats.factor == "recursion_steps") & (stats.level == "4")].set_index("rung")
    assert t4.loc[3, "mean"] == pytest.approx(0.4)
    # the baseline is not a level of any factor
    assert stats[stats.factor == "recursion_steps"]["trials"].groupby(stats.level).first().sum() == 3
    crop = stats[(stats.factor == "crop_scale") & (stats.rung == 1)].set_index("level")
    assert list(crop.index) == ["0.2-0.4", "0.8-1"] and crop.loc["0.2-0.4", "trials"] == 2


def test_levels_bin_continuous_ranges_and_mark_inactive_values() -> None:
    space = _space()
    temps = pd.Series([0.15, 0.5, 2.0, 9.0, None])
    levels = analysis.levels(temps, space.parameters["attention_temperature"])  # log range 0.1 .. 10
    assert list(levels) == ["0.1-0.32", "0.32-1", "1-3.2", "3.2-10", analysis.INACTIVE]
    crops = analysis.levels(pd.Series([0.2, 0.41, 1.0]), space.parameters["crop_scale"])
    assert list(crops) == ["0.2-0.4", "0.4-0.6", "0.8-1"]


def test_interaction_means_and_counts_at_one_rung() -> None:
    table = _table([
        ("a", "search", {"recursion_steps": 2, "crop_scale": 0.3}, [0.2, 0.4, 0.6]),
        ("b", "search", {"recursion_steps": 2, "crop_scale": 0.35}, [0.4, 0.5, 0.8]),
        ("c", "search", {"recursion_steps": 5, "crop_scale": 0.9}, [0.1]),
    ])
    mean, count = analysis.interaction(table, _space(), "recursion_steps", "crop_scale", 1)
    assert mean.loc["2", "0.2-0.4"] == pytest.approx(0.3) and count.loc["2", "0.2-0.4"] == 2
    assert mean.loc["5", "0.8-1"] == pytest.approx(0.1)
    mean3, _ = analysis.interaction(table, _space(), "recursion_steps", "crop_scale", 3)
    assert list(mean3.index) == ["2"] and mean3.loc["2", "0.2-0.4"] == pytest.approx(0.7)


def _curves(finals: list[float], earlies: list[float]) -> pd.DataFrame:
    return _table([(f"t{i}", "search", {"recursion_steps": 2}, [e, (e + f) / 2, f])
                   for i, (e, f) in enumerate(zip(earlies, finals, strict=True))])


def test_rung_correlation_trusts_agreeing_ranks_and_warns_when_curves_cross() -> None:
    space = _space()
    agree = analysis.rung_correlation(_curves([0.5, 0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5]), space)
    final = agree[(agree.rung == 1) & (agree.against == 3)].iloc[0]
    assert final["n"] == 5 and final["spearman"] == pytest.approx(1.0)
    trusted, sentence = analysis.early_stopping_verdict(agree, 3)
    assert trusted and "agree" in sentence
    crossed = analysis.rung_correlation(_curves([0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]), space)
    assert crossed[(crossed.rung == 1) & (crossed.against == 3)].iloc[0]["spearman"] == pytest.approx(-1.0)
    trusted, sentence = analysis.early_stopping_verdict(crossed, 3)
    assert not trusted and sentence.startswith("Warning") and "Learning curves cross" in sentence


def test_rung_correlation_says_it_cannot_tell_with_too_few_trials() -> None:
    corr = analysis.rung_correlation(_curves([0.5, 0.6], [0.1, 0.2]), _space())
    assert corr["spearman"].isna().all() and set(corr["n"]) == {2}
    trusted, sentence = analysis.early_stopping_verdict(corr, 3)
    assert not trusted and sentence.startswith("Cannot tell")


def test_best_configs_rank_full_trials_first_and_gain_is_against_the_baseline() -> None:
    table = _table([
        ("early", "search", {"recursion_steps": 2}, [0.95]),
        ("full", "search", {"recursion_steps": 4}, [0.2, 0.5, 0.7]),
        ("full2", "search", {"recursion_steps": 6}, [0.2, 0.5, 0.6]),
        ("base", "baseline", {}, [0.3, 0.4, 0.45]),
    ])
    table.loc[table.name == "full", "test_acc"] = 0.66
    table.loc[table.name == "base", "test_acc"] = 0.40
    best = analysis.best_configs(table, _space())
    assert list(best["name"]) == ["full", "full2", "early"]
    (gain,) = analysis.baseline_gain(table, _space())
    assert gain["best"] == "full" and gain["baseline"] == "base"
    assert gain["gain_val_acc"] == pytest.approx(0.25) and gain["gain_test_acc"] == pytest.approx(0.26)


def test_importance_from_optuna_storage_at_each_rung(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="imp", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    space = _space(max_epochs=3, grace=1, rf=3)
    for i in range(30):
        trial = study.ask()
        x = trial.suggest_float("crop_scale", 0.2, 1.0)
        trial.suggest_int("recursion_steps", 1, 10)  # has no effect on the value
        for step in (1, 2, 3):
            trial.report(x * step / 3, step)
        if i % 3 == 0:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # Optuna stores its last value
        else:
            study.tell(trial, x)
    table = analysis.importance(storage, "imp", space)
    assert set(table["method"]) == {"PED-ANOVA", "fANOVA"}
    for (rung, method), rows in table.groupby(["rung", "method"]):
        values = rows.set_index("parameter")["importance"]
        assert values["crop_scale"] > values["recursion_steps"], (rung, method)
    # at max_t only the COMPLETE trials count, not the pruned ones' last values
    assert set(table[table.rung == 3]["trials"]) == {20}
    assert set(table[table.rung == 1]["trials"]) == {30}


def test_importance_is_not_computed_from_a_handful_of_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="few", storage=storage)
    for _ in range(3):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("crop_scale", 0.2, 1.0))
    table = analysis.importance(storage, "few", _space())
    assert table["importance"].isna().all() and table["note"].str.contains("fewer than").all()


def test_document_writes_the_same_content_as_markdown_and_self_contained_html(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picture = tmp_path / "figures" / "p.png"
    picture.parent.mkdir()
    plt.plot([0, 1])
    plt.savefig(picture)
    doc = Document("Title <x>")
    doc.heading("Section")
    doc.table(pd.DataFrame({"a": [1.23456, math.nan], "b": ["x|y", None]}))
    doc.warn("careful")
    doc.text("**bold** and `code`")
    doc.image(picture, "a plot")
    md = doc.markdown(tmp_path)
    assert "| 1.235 | x\\|y |" in md and "| - | - |" in md and "![a plot](figures/p.png)" in md
    html = doc.html()
    assert "Title &lt;x&gt;" in html and "data:image/png;base64," in html and "<td>1.235</td>" in html
    assert "<b>bold</b> and <code>code</code>" in html and "**bold** and `code`" in md


def test_the_report_ranks_as_the_study_summary_does() -> None:
    """One ranking (study.ranking): trials that reached max_t first, then the metric, ties to
    the name. The report's table and the summary agree, ties and short trials included."""
    from study.ranking import ranked

    curves = [("zeta", [0.1, 0.2, 0.5]), ("alpha", [0.1, 0.2, 0.5]), ("mid", [0.1, 0.2, 0.5]), ("short", [0.9])]
    table = _table([(name, "search", {"recursion_steps": 2}, curve) for name, curve in curves])
    max_t = _space().study.max_epochs
    best = analysis.best_configs(table, _space())
    rows = [{"name": n, "trial_id": n, "kind": "search", "outcome": "completed" if len(c) == max_t else "stopped_early",
             "epochs": len(c), "val_acc": c[-1]} for n, c in curves]
    summary_order = [r["name"] for r in ranked(rows, "val_acc", "max", max_t)]
    assert list(best["name"]) == summary_order == ["alpha", "mid", "zeta", "short"]  # 0.9, but at epoch 1
