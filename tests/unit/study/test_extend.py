"""`--extend` before anything runs: the record of a grown study (its experiments, its history, the
trials to add), the readers that follow it (the searcher, the rungs, the confirmation's check),
and the one-line refusals (an interrupted study, nothing to grow, a contradicting flag)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from study import summary as summaries
from study.cli import main, resolve
from study.errors import StudyInputError
from study.keys import FINALIST_OF
from study.options import parse_options
from study.record import finished, load


def _finished(tmp_path: Path, *flags: str, trials: int = 4, epochs: int = 30, rerun_epochs: int = 0) -> Path:
    """A study's record and the summary its end writes (`trials` sampled trials that ran
    `epochs` epochs in all, besides `rerun_epochs` of the finalists' re-runs)."""
    from study.phases.search import start

    record = start(resolve(parse_options(["--space", "ablation", "--name", "s", "--out", str(tmp_path), *flags])))
    rows = [{"trial_id": f"t{i}", "kind": "search", "epochs": epochs // trials} for i in range(trials)]
    summaries.save({"experiments": list(record.experiments), "trials": rows, "epochs_spent": epochs + rerun_epochs,
                    "rerun_epochs": rerun_epochs}, record.folder)
    return record.folder


def _extend(tmp_path: Path, *flags: str) -> Any:
    return resolve(parse_options(["--name", "s", "--out", str(tmp_path), "--extend", *flags]))


def test_an_extension_adds_an_experiment_and_its_history_to_the_record(tmp_path: Path) -> None:
    from study.phases.search import extend

    folder = _finished(tmp_path, "--num-samples", "4", "--max-epochs", "3")
    (folder / "confirm.parquet").write_bytes(b"the confirmation of the best before")
    grown = extend(_extend(tmp_path, "--num-samples", "10", "--concurrency", "2"))
    record = load(folder)
    # set aside: the report must not read it as the grown study's
    assert not (folder / "confirm.parquet").exists()
    assert (folder / "confirm-s.parquet").read_bytes() == b"the confirmation of the best before"
    assert record == grown
    assert record.space.study.num_samples == 10 and record.resources.concurrency == 2
    (step,) = record.extensions
    assert step.experiment == "s-ext1" and step.num_samples == (4, 10) and step.trials == 6
    assert record.experiments == ("s", "s-ext1") and record.tune_paths == (str(tmp_path / "s"), str(tmp_path / "s-ext1"))
    # the new trials run in their own experiment, and so do the ending's new re-runs; no baseline again
    assert record.tune_path == str(tmp_path / "s-ext1") and record.finalists_path == str(tmp_path / "s-ext1-finalists")
    assert record.expected_trials() == 6
    assert "samples 4 -> 10 (up to 6 trial(s) in Tune experiment s-ext1)" in step.line()  # ablation's budget
    # the summary of the study before is not this record's end: the study is unfinished until its ending
    assert not finished(record, summaries.load(folder))
    with pytest.raises(StudyInputError, match=r"did not finish .* resume it first: python -m study.run --name s"):
        _extend(tmp_path, "--num-samples", "12")


def test_an_extended_study_reads_every_experiment_and_its_searcher_runs_no_baseline_again(tmp_path: Path) -> None:
    from study.phases.search import extend
    from study.policies import load_policy
    from study.searchers import FidelitySearcher

    _finished(tmp_path, "--num-samples", "4", "--max-epochs", "3", "--policy", "asha")
    record = extend(_extend(tmp_path, "--num-samples", "6"))
    searcher, scheduler = load_policy("asha").build(record)
    assert isinstance(searcher, FidelitySearcher)
    assert searcher.study_name == "s" and searcher.pending_baselines == []  # the same Optuna study
    assert scheduler.history_from == record.tune_paths  # its rungs are rebuilt from every experiment


def test_a_second_extension_follows_the_first(tmp_path: Path) -> None:
    from study.phases.search import extend

    folder = _finished(tmp_path, "--num-samples", "4")
    record = extend(_extend(tmp_path, "--num-samples", "6"))
    done = summaries.load(folder)
    assert done is not None
    done["experiments"] = list(record.experiments)
    done["trials"] += [{"trial_id": "t9", "kind": "search", "epochs": 3}, {"trial_id": "b", "kind": "baseline",
                                                                         "epochs": 9}]
    summaries.save(done, folder)
    again = _extend(tmp_path, "--num-samples", "9")
    assert [e.experiment for e in again.extensions] == ["s-ext1", "s-ext2"]
    assert again.extensions[-1].num_samples == (6, 9) and again.expected_trials() == 4  # 5 sampled trials ran


@pytest.mark.parametrize(("flags", "message"), [
    ([], "--extend needs a larger --num-samples or --epoch-budget .study 's' has 4 samples and a budget of 220"),
    (["--num-samples", "3"], "--extend adds to a study: study 's' has 4 samples"),
    (["--epoch-budget", "100"], "--extend adds to a study"),
    (["--num-samples", "8", "--max-epochs", "5"], "--extend: --max-epochs 5 contradicts study 's'"),
    (["--num-samples", "8", "--seed", "3"], "--extend: --seed 3 contradicts study 's'"),
])
def test_an_extension_that_would_not_grow_or_contradicts_the_study_is_refused(
        tmp_path: Path, flags: list[str], message: str) -> None:
    _finished(tmp_path, "--num-samples", "4")
    with pytest.raises(StudyInputError, match=message):
        _extend(tmp_path, *flags)


def test_an_extension_needs_room_in_the_budget_and_samples_not_yet_run(tmp_path: Path) -> None:
    # ablation: 220 epochs less 90 for 3 finalists' re-runs (2 seeds, 15 epochs) leave 130 to the
    # search, all spent; a budget of 274 leaves it 94 once the 90 epochs of re-runs made count
    _finished(tmp_path, "--num-samples", "20", trials=13, epochs=130, rerun_epochs=90)
    for flags in (["--num-samples", "30"], ["--epoch-budget", "274"]):
        with pytest.raises(StudyInputError, match=r"has spent 220 epochs \(90 of them re-runs\); an epoch budget"):
            _extend(tmp_path, *flags)
    assert _extend(tmp_path, "--epoch-budget", "400").extensions[-1].trials == 7  # 20 samples, 13 run
    with pytest.raises(StudyInputError, match="started without an epoch budget; extend it with --num-samples"):
        other = tmp_path / "other"
        _finished(other, "--num-samples", "4", "--space", "ablation")
        record = json.loads((other / "s" / "study.json").read_text())
        record["space"]["study"]["epoch_budget"] = None
        (other / "s" / "study.json").write_text(json.dumps(record))
        resolve(parse_options(["--name", "s", "--out", str(other), "--extend", "--epoch-budget", "400"]))


def test_the_command_line_refuses_an_unfinished_study_and_resume_with_extend(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from study.phases.search import start

    start(resolve(parse_options(["--space", "ablation", "--name", "s", "--out", str(tmp_path)])))
    assert main(["--name", "s", "--out", str(tmp_path), "--extend", "--num-samples", "40"]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"error: --extend: study 's' did not finish (it was interrupted); resume it first: "
                    f"python -m study.run --name s --out {tmp_path} --resume")
    with pytest.raises(SystemExit) as exit_:
        parse_options(["--name", "s", "--resume", "--extend"])
    assert exit_.value.code == 2 and "give one of them" in capsys.readouterr().err
    _finished(tmp_path / "stock", "--searcher", "optuna-stock", "--num-samples", "4")
    with pytest.raises(StudyInputError, match="stock searcher cannot continue a finished study"):
        resolve(parse_options(["--name", "s", "--out", str(tmp_path / "stock"), "--extend", "--num-samples", "8"]))


def test_the_study_s_experiments_read_as_one() -> None:
    from types import SimpleNamespace

    from study.experiments import StudyExperiments

    class Part:  # what the study reads of an ExperimentAnalysis
        def __init__(self, ids: list[str]) -> None:
            self.trials = [SimpleNamespace(trial_id=i) for i in ids]
            self.trial_dataframes = {i: i.upper() for i in ids}

        def get_best_checkpoint(self, trial: Any, metric: str | None = None, mode: str | None = None) -> Any:
            return self, trial.trial_id, metric, mode

        def get_last_checkpoint(self, trial: Any) -> Any:
            return self, trial.trial_id

    first, second = Part(["x", "y"]), Part(["z"])
    both = StudyExperiments([first, second])
    assert [t.trial_id for t in both.trials] == ["x", "y", "z"] and both.trial_dataframes == {"x": "X", "y": "Y",
                                                                                               "z": "Z"}
    assert both.get_best_checkpoint(second.trials[0], "val_acc", "max") == (second, "z", "val_acc", "max")
    assert both.get_last_checkpoint(first.trials[1]) == (first, "y")
    with pytest.raises(ValueError, match="trial id x is in two of the study's Tune experiments"):
        StudyExperiments([first, Part(["x"])])


def _reruns(record: Any, configs: list[dict[str, Any]], experiment: str) -> Any:
    """The re-runs' table a Tune experiment of `configs` gives (two epochs each, to the end)."""
    import pandas as pd

    rows = []
    for i, config in enumerate(configs):
        for epoch in (1, 2):
            rows.append({"trial_id": f"{experiment}-{i}", "finalist_of": config[FINALIST_OF], "epoch": epoch,
                         "config.seed": config["seed"], "outcome": "completed", "epochs_run": 2, "val_acc": 0.5})
    return pd.DataFrame(rows)


def test_an_extension_s_ending_keeps_the_re_runs_an_earlier_ending_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finalist re-run before, with the same seed, is not run again; the re-runs of one no
    longer among the finalists stay in finalists.parquet and in the epochs spent."""
    from study.phases import finalists, reruns
    from study.phases.search import extend
    from study.results import FINALISTS_FILE, save_table

    folder = _finished(tmp_path, "--num-samples", "4", "--max-epochs", "2", "--finalists", "2", "--finalist-seeds", "2")
    record = load(folder)
    rows = {t: {"trial_id": t, "recursion_steps": 3, "crop_scale": 0.5} for t in ("a", "b", "c")}
    before = _reruns(record, [c for t in ("a", "b") for c in finalists._configs(record, rows[t], [1, 2])], "s")
    save_table(before, folder / FINALISTS_FILE)  # the first ending's re-runs, from before extensions
    grown = extend(_extend(tmp_path, "--num-samples", "8"))
    ran: list[tuple[str, int]] = []

    def under_tune(rec: Any, experiment: str, path: str, configs: list[dict[str, Any]], test: bool) -> Any:
        assert experiment == "s-ext1-finalists" and path == str(tmp_path / "s-ext1-finalists")
        ran.extend((c[FINALIST_OF], c["seed"]) for c in configs)
        return _reruns(rec, configs, experiment), True

    monkeypatch.setattr(reruns, "run", under_tune)
    configs = [c for t in ("b", "c") for c in finalists._configs(grown, rows[t], [1, 2])]  # b stays, a drops out
    table = finalists.run_under_tune(grown, configs, [1, 2])
    assert ran == [("c", 1), ("c", 2)]  # b's two re-runs are kept
    assert sorted(zip(table.groupby("trial_id").first()["finalist_of"], table.groupby("trial_id").first()["config.seed"],
                      strict=True)) == [("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    import pandas as pd

    saved = pd.read_parquet(folder / FINALISTS_FILE)
    assert saved.groupby("trial_id").first()["experiment"].value_counts().to_dict() == {"s": 4, "s-ext1": 2}
    assert finalists.earlier_epochs(grown, table) == 2 * 2  # a's two re-runs of two epochs
    assert finalists.earlier_epochs(dataclasses.replace(grown, extensions=()), table) == 0  # no earlier ending


def test_experiments_an_earlier_study_of_the_name_left_are_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A study folder removed and its name used again: Tune would restore the experiments left
    beside it (its ending's, its extensions') as the new study's."""
    from ray.tune import Tuner

    from study import preflight

    # restorable: a folder with a "saved" file (Tune's own test is its saved Tuner)
    monkeypatch.setattr(Tuner, "can_restore", classmethod(lambda cls, path, fs=None: (Path(path) / "saved").exists()))
    for name, saved in (("s-finalists", True), ("s-ext1", True), ("s-ext1-finalists-2", True), ("s-extra", True),
                        ("s-confirm", False)):
        (tmp_path / name).mkdir()
        if saved:
            (tmp_path / name / "saved").touch()
    new = resolve(parse_options(["--space", "ablation", "--name", "s", "--out", str(tmp_path)]))
    with pytest.raises(StudyInputError, match=r"holds experiment\(s\) s-ext1, s-ext1-finalists-2, s-finalists of an "
                                              r"earlier study named 's'.*move them away, or choose another --name"):
        preflight.check_no_stale_experiments(new)
    preflight.check_no_stale_experiments(resolve(parse_options(["--space", "ablation", "--name", "t", "--out",
                                                                str(tmp_path)])))  # another name: nothing of its own
