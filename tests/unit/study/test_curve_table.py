"""The RRA curve table and its replay: a table written from recorded runs reads back as it was
written, a trial replays the recorded curve of the nearest configuration through the real
study, bad tables are refused before any trial starts, and the search benchmark's machinery
runs end to end on a small table."""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.tables import curves
from trainables.curve_table import CurveTable, coordinates, seed_adjusted

ROOT = Path(__file__).resolve().parents[3]
EPOCHS = 4


def _curve(values: dict[str, Any], seed: int) -> list[dict[str, float]]:
    """A made-up curve: better near crop scale 0.4, crossing curves (large T learns later)."""
    top = 0.3 if not values.get("local_stream", True) else 0.9 - abs(values["crop_scale"] - 0.4)
    steps = values.get("recursion_steps", 1)
    out = []
    for epoch in range(1, EPOCHS + 1):
        acc = top * min(1.0, epoch / (1 + steps / 3)) + 0.01 * seed
        out.append({k: acc for k in ("val_acc", "val_acc_global", "val_acc_local", "train_acc")}
                   | {k: 1 - acc for k in ("val_loss", "train_loss")} | {"epoch_seconds": 0.1, "val_seconds": 0.01})
    return out


def write_table(folder: Path, configs: int = 12, extra: dict[str, int] | None = None, seeds: int = 2,
                design: str = "ablation") -> Path:
    """A small table through `benchmarks.tables.curves.write`, from runs made up in its work folder:
    `seeds` seeds (0, 1, ...) of every configuration, and `extra` seeds after them of some."""
    work = folder / "work"
    work.mkdir(parents=True)
    (work / "plan.json").write_text(json.dumps({"configs": configs, "seeds": seeds, "design": design,
                                                "space": curves.DESIGNS[design].name}))
    extra = extra or {}
    with (work / "runs.jsonl").open("w") as sink:
        for name, values in curves.configurations(configs, design=design).items():
            for seed in range(seeds + extra.get(name, 0)):
                sink.write(json.dumps({"config": name, "seed": seed, "values": values, "seconds": 1.0,
                                       "epochs": _curve(values, seed)}) + "\n")
    return curves.write(work, folder / "table.parquet", "test", latency_repeats=1)  # FLOPs exact, latencies rough


def test_a_written_table_reads_back_and_matches_the_nearest_configuration(tmp_path: Path) -> None:
    table = CurveTable(write_table(tmp_path))
    configs = curves.configurations(12)
    assert table.epochs == EPOCHS and table.seeds == [0, 1] and set(table.values) == set(configs)
    assert table.metadata["command"] == "test" and table.metadata["recorded_runs"] == 28
    assert "cpu_model" in table.metadata["machine"] and "torch" in table.metadata["versions"]
    for name, values in configs.items():
        match = table.match({"local_stream": True, **values})
        assert match.config == name and match.distance == 0.0
    # off the grid: the nearest recorded configuration, in the scaled coordinates
    probe = {"recursion_steps": 3, "crop_scale": 0.55, "attention_temperature": 2.0}
    nearest = min((n for n, v in table.values.items() if v["local_stream"]),
                  key=lambda n: sum((a - b) ** 2 for a, b in zip(coordinates(probe), coordinates(table.values[n]),
                                                                  strict=True)))
    assert table.match(probe).config == nearest and table.match(probe).distance > 0
    assert table.match({"local_stream": False, "crop_scale": 0.3}).config == "global_only"
    # each configuration's inference cost, as its trial would measure it, comes with the first epoch
    from trainables.config import TrialConfig
    from trainables.cost import forward_flops
    from trainables.model import RRA

    cfg = TrialConfig.from_dict(curves._space().trial_config(configs["paper"]))
    model = RRA(cfg.model_config(cfg.synthetic_classes))
    paper = table.match({"local_stream": True, **configs["paper"]})
    flops = forward_flops(model, torch.randn(1, 3, cfg.image_size, cfg.image_size))
    assert table.metrics(paper, 1)["cost_flops_per_image"] == flops and "cost_flops_per_image" not in \
        table.metrics(paper, 2)
    assert table.costs["global_only"]["cost_flops_per_image"] < flops
    assert table.true_final("paper") == pytest.approx(sum(_curve(configs["paper"], s)[-1]["val_acc"]
                                                          for s in (0, 1)) / 2)
    held = table.held_out()
    assert held["configs"] == 13 and held["mae_points"] >= 0 and held["seed_noise_points"] == pytest.approx(1.0)
    shown = curves.show(tmp_path / "table.parquet")
    assert shown["final_val_acc"]["best_config"] != "global_only"
    assert shown["rank_correlation_with_final"][1] < 1.0  # the made-up curves cross
    truth = [table.true_final(n) for n, v in table.values.items() if v["local_stream"]]
    assert shown["configs_within_1pt_of_best"] == sum(t >= max(truth) - 0.01 for t in truth) >= 1
    assert shown["regret_of_best_by_one_seed_points"] == {0: 0.0, 1: 0.0}  # a seed shifts every curve alike


def test_a_replayed_trial_draws_fresh_noise_for_the_seed_it_trains_with(tmp_path: Path) -> None:
    # "paper" has 4 seeds, every other configuration 2: the shared seeds are 0 and 1
    table = CurveTable(write_table(tmp_path, extra={"paper": 2}))
    assert table.seeds == [0, 1, 2, 3] and table.shared_seeds == [0, 1] and not table.drawn
    names = [n for n, v in table.values.items() if v["local_stream"]]
    for seed in (0, 1, 2, 7):
        assert {table.match(table.values[n], seed).seed for n in names} == {seed}
    # no replay reports a recorded run: not the one of its own seed, nor any other (the truth is
    # computed from those); the made-up runs have no noise of their own, only a shift per seed,
    # so a replay is the configuration's mean moved by a new seed's shift, the same for every
    # configuration of that seed (a study's trials share it): differences are the means'
    for seed in (0, 1, 5):
        drawn = {n: table.metrics(table.match(table.values[n], seed), EPOCHS)["val_acc"] for n in names}
        assert all(drawn[n] != run[-1]["val_acc"] for n in names for (m, _), run in table.curves.items() if m == n)
        for a, b in itertools.pairwise(names):
            assert drawn[a] - drawn[b] == pytest.approx(table.true_final(a) - table.true_final(b), abs=1.1 / 1026)
    shifts = {s: table.metrics(table.match(table.values["c000"], s), EPOCHS)["val_acc"] for s in range(6)}
    assert len(set(shifts.values())) >= 4  # each seed its own shift (on the grid of 1026 images, two may meet)
    # the same configuration and seed replay the same curve (a seed's training is repeatable)
    assert table.metrics(table.match(table.values["c001"], 3), 2) == table.metrics(table.match(table.values["c001"], 3), 2)
    # a configuration's truth is its mean over all the table's seeds: the made-up seeds shift every
    # curve alike, so "c000", recorded on seeds 0 and 1 only, is judged as if on 0-3 as "paper" is
    # (its plain mean would be 1 point lower), and nothing of a run is left unexplained (error 0)
    finals = [_curve(table.values["paper"], s)[-1]["val_acc"] for s in range(4)]
    assert table.true_final("paper") == pytest.approx(sum(finals) / 4)
    assert table.true_final("c000") == pytest.approx(statistics.fmean(_curve(table.values["c000"], s)[-1]["val_acc"]
                                                                      for s in range(4)))
    assert table.standard_error("paper") == pytest.approx(0.0, abs=1e-9)
    # the table says so itself: seeds and standard errors per configuration, in its metadata and `show`
    assert table.metadata["seeds_per_config"]["paper"] == 4 and table.metadata["seeds_per_config"]["c000"] == 2
    assert table.metadata["standard_error"]["paper"] == pytest.approx(0.0, abs=1e-5)
    assert table.metadata["true_val_acc"]["c000"] == pytest.approx(table.true_final("c000"), abs=1e-5)
    shown = curves.show(tmp_path / "table.parquet")
    assert shown["seeds_shared_by_every_config"] == [0, 1] and shown["seeds_per_config"] == {"2": 13, "4": 1}
    assert shown["validation_images"] == 6 * round(285 * 0.6)  # the efficiency space's split


def test_a_configuration_recorded_on_other_seeds_is_judged_on_all_of_them() -> None:
    """seed_adjusted: with a large shared effect per seed, more (hard) seeds for one
    configuration lower its plain mean, not its seed-adjusted one; each error is the
    configuration's own residual spread."""
    shared = [0.10, -0.08, 0.05, -0.20, -0.20, -0.20]
    truth = {"a": 0.80, "b": 0.75, "c": 0.70}  # "a" and "b" have six seeds, "c" the first three
    own = {("a", s): 0.01 * (-1) ** s for s in range(6)}
    finals = {(n, s): truth[n] + shared[s] + own.get((n, s), 0.0) for n in truth for s in range(3 if n == "c" else 6)}
    means, errors = seed_adjusted(finals)
    assert statistics.fmean(finals[("a", s)] for s in range(6)) < statistics.fmean(finals[("c", s)] for s in range(3))
    assert means["a"] - means["c"] == pytest.approx(0.10, abs=0.01) and means["a"] > means["b"] > means["c"]
    assert means["c"] == pytest.approx(truth["c"] + statistics.fmean(shared), abs=0.01)  # on the mean of all seeds
    assert errors["a"] > max(errors["b"], errors["c"])  # only "a" has noise of its own
    # the same seeds for all: the plain means
    balanced = {k: v for k, v in finals.items() if k[1] < 3}
    assert seed_adjusted(balanced)[0] == pytest.approx({n: statistics.fmean(balanced[(n, s)] for s in range(3))
                                                        for n in truth})
    assert seed_adjusted({("a", 0): 0.5, ("b", 0): 0.6})[1] == {"a": math.inf, "b": math.inf}


def test_the_recording_gives_its_best_configurations_more_seeds_until_they_are_known() -> None:
    names = ["a", "b", "c", "d"]
    finals: dict[tuple[str, int], float] = {}
    assert curves.next_runs(finals, names, 2, top=2, target_se=0.01, max_seeds=12) == \
        [(n, s) for s in (0, 1) for n in names]
    truth = {"a": 0.8, "b": 0.7, "c": 0.5, "d": 0.4}
    # a large shift shared by every configuration on each seed, and +-2 points of their own
    shared = [0.10, -0.08, 0.05, -0.12, 0.0, 0.07, -0.03, 0.09, -0.06, 0.02, 0.04, -0.01]

    def final(name: str, seed: int) -> float:
        own = 0.02 * (1 if (seed % 2 == 0) == (name in ("a", "c")) else -1)
        return truth[name] + shared[seed] + own

    finals = {(n, s): final(n, s) for n in names for s in (0, 1)}
    # the top two by mean get seed 2 together; the others keep their two
    assert curves.next_runs(finals, names, 2, top=2, target_se=0.01, max_seeds=12) == [("a", 2), ("b", 2)]
    # the paired error of n shared seeds, by hand (the shared shift cancels; the own +-2 points
    # leave a residual of 0.0008 n / (n - 1) for even n, 0.0008 (n + 1) / n for odd n): at most
    # 1 point from 9 seeds on, and the recording stops there, below its cap of 12
    def paired(n: int) -> float:
        return math.sqrt(0.0008 / (n - 1)) if n % 2 == 0 else math.sqrt(0.0008 * (n + 1)) / n

    for seed in range(2, 12):
        assert curves.next_runs(finals, names, 2, top=2, target_se=0.01, max_seeds=12) == \
            ([("a", seed), ("b", seed)] if seed < 9 else [])
        assert curves.paired_standard_error(finals, ["a", "b"]) == pytest.approx(paired(seed))
        if seed >= 9:
            break
        finals.update({(n, seed): final(n, seed) for n in ("a", "b")})
    # a configuration that rises into the top later is first given the seeds the others have
    finals[("c", 0)] = finals[("c", 1)] = 0.95
    assert curves.next_runs(finals, names, 2, top=2, target_se=0.01, max_seeds=12) == [("c", s) for s in range(2, 9)]


def _study(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "study.run", "--quiet", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_cost_table_varies_what_moves_the_cost_and_a_trial_replays_its_own_kind(tmp_path: Path) -> None:
    """The cost design: refine, recursion steps, patch size and crop scale; its configurations'
    FLOPs differ as the model's do (zoom runs the local backbone at every step), and a trial
    replays a configuration with its own refine and patch size."""
    from trainables.curve_table import CurveTableError

    table = CurveTable(write_table(tmp_path, configs=16, design="cost"))
    assert table.metadata["plan"]["design"] == "cost" and "refine" in table.metadata["space"]["parameters"]
    sampled = {n: v for n, v in table.values.items() if v["local_stream"]}
    assert {v["refine"] for v in sampled.values()} == {"repeat", "zoom"}
    assert {v["patch_size"] for v in sampled.values()} <= {16, 32, 48}
    for values in sampled.values():
        match = table.match({**values, "crop_scale": values["crop_scale"] + 0.01}, 0)
        assert (table.values[match.config]["refine"], table.values[match.config]["patch_size"]) == \
            (values["refine"], values["patch_size"])
    flops = {n: table.costs[n]["cost_flops_per_image"] for n in sampled}
    zoom = [n for n, v in sampled.items() if v["refine"] == "zoom" and v["recursion_steps"] > 2]
    # zoom with T > 2 costs more than repeat with no more steps at the same patch size
    pairs = [(r, z) for z in zoom for r, v in sampled.items() if v["refine"] == "repeat"
             and v["patch_size"] == sampled[z]["patch_size"] and v["recursion_steps"] <= sampled[z]["recursion_steps"]]
    assert pairs and all(flops[r] < flops[z] for r, z in pairs)
    with pytest.raises(CurveTableError, match="no configuration with refine=zoom, patch_size=64"):
        table.match({"refine": "zoom", "patch_size": 64, "recursion_steps": 3, "crop_scale": 0.5}, 0)
