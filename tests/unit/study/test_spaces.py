from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from study.spaces import SpaceError, list_spaces, load_space
from trainables.config import TrialConfig


@pytest.mark.parametrize("name", list_spaces())
def test_every_shipped_space_loads_and_samples_valid_trial_configs(name: str) -> None:
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    data_dir = {"data_dir": "/data"} if space.constants.get("dataset", "synthetic") != "synthetic" else {}
    for _ in range(20):
        trial = study.ask()
        values = space.suggest(trial)
        cfg = TrialConfig.from_dict({**space.trial_config(values), **data_dir})
        assert cfg.epochs == space.study.max_epochs
        for key, value in values.items():
            assert getattr(cfg, key) == value
        study.tell(trial, 0.0)
    for point in [*space.baselines.values(), *space.enqueue]:
        TrialConfig.from_dict({**space.trial_config(point), **data_dir})


def test_ablation_space_maps_to_optuna_distributions() -> None:
    space = load_space("ablation")
    assert space.distributions() == {
        "recursion_steps": IntDistribution(1, 10),
        "crop_scale": FloatDistribution(0.2, 1.0),
        "attention_temperature": FloatDistribution(0.1, 10.0, log=True),
    }
    assert space.baselines == {"global_only": {"local_stream": False}}
    assert space.enqueue[0] == {"recursion_steps": 10, "crop_scale": 0.25, "attention_temperature": 1.0}


def test_conditional_parameter_is_sampled_only_when_its_condition_holds() -> None:
    space = load_space("ablation")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_t1 = seen_more = False
    for _ in range(60):
        trial = study.ask()
        values = space.suggest(trial)
        if values["recursion_steps"] == 1:
            seen_t1 = True
            assert "attention_temperature" not in values
        else:
            seen_more = True
            assert 0.1 <= values["attention_temperature"] <= 10.0
        study.tell(trial, 0.0)
    assert seen_t1 and seen_more


GOOD = """
study: {metric: val_acc, mode: max, max_epochs: 4, grace_period: 1, reduction_factor: 2, num_samples: 3}
constants: {backbone: tiny}
parameters:
  recursion_steps: {type: int, low: 1, high: 4}
  refine: {type: categorical, choices: [repeat, zoom]}
  zoom_ratio: {type: float, low: 0.5, high: 0.9, step: 0.1, when: "refine == zoom"}
  lr: {type: float, low: 0.0001, high: 0.1, log: true}
"""


def test_a_good_file_loads_with_every_kind_of_parameter(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    space = load_space(str(path))
    assert space.name == "good"
    assert space.distributions()["zoom_ratio"] == FloatDistribution(0.5, 0.9, step=0.1)
    assert space.parameters["zoom_ratio"].when is not None
    assert str(space.parameters["zoom_ratio"].when) == "refine == zoom"


BAD = [
    ("parameters: [1, 2]", "parameters: expected a mapping"),
    ("parameters:\n  recursion_steps: {type: integer, low: 1, high: 3}", "parameters.recursion_steps.type: expected int"),
    ("parameters:\n  recursion_steps: {type: int, low: 5, high: 3}", "parameters.recursion_steps.high: expected a value above low"),
    ("parameters:\n  recursion_steps: {type: int, low: 1.5, high: 3}", "parameters.recursion_steps.low: expected an integer"),
    ("parameters:\n  lr: {type: float, low: 0, high: 1, log: true}", "parameters.lr.low: expected a positive value"),
    ("parameters:\n  lr: {type: float, low: 0.1, high: 1, mean: 3}", "parameters.lr.mean: expected one of"),
    ("parameters:\n  refine: {type: categorical, choices: []}", "parameters.refine.choices: expected a non-empty list"),
    ("parameters:\n  learning_rate: {type: float, low: 0.1, high: 1}", "parameters.learning_rate: expected a trial config key"),
    ("parameters:\n  attention_temperature: {type: float, low: 0.1, high: 1, when: 'recursion_steps > 1'}",
     "parameters.attention_temperature.when: expected a parameter defined above"),
    ("parameters:\n  recursion_steps: {type: int, low: 1, high: 3, when: 'nonsense'}", "when: expected '<earlier"),
    ("study: {mode: maximise}", "study.mode: expected min or max"),
    ("study: {max_epochs: 0}", "study.max_epochs: expected an integer >= 1"),
    ("study: {max_epochs: 3, grace_period: 5}", "study.grace_period: expected at most max_epochs"),
    ("study: {reduction_factor: 1}", "study.reduction_factor: expected a number > 1"),
    ("study: {checkpoint_every: 0}", "study.checkpoint_every: expected an integer >= 1"),
    ("study: {epoch_budget: 2.5}", "study.epoch_budget: expected an integer >= 1"),
    ("study: {patience: 3}", "study.patience: expected one of"),
    ("study: {finalists: -1}", "study.finalists: expected an integer >= 0"),
    ("study: {finalist_seeds: 0}", "study.finalist_seeds: expected an integer >= 1"),
    ("study: {finalist_share: 1.5}", "study.finalist_share: expected a share of the epoch budget in (0, 1)"),
    ("constants: {recursion_step: 3}", "constants.recursion_step: expected a trial config key"),
    ("constants: {epochs: 3}", "constants.epochs: expected no epochs key"),
    ("constants: {crop_scale: 0.5}\nparameters:\n  crop_scale: {type: float, low: 0.2, high: 1}",
     "constants.crop_scale: expected a key that is not also a parameter"),
    ("parameters:\n  crop_scale: {type: float, low: 0.2, high: 1}\nenqueue:\n  - {crop_scale: 3}",
     "enqueue[0].crop_scale: expected a value in the parameter's range"),
    ("parameters:\n  crop_scale: {type: float, low: 0.2, high: 1}\nenqueue:\n  - {local_stream: false}",
     "enqueue[0].local_stream: expected a parameter of this space"),
    ("baselines: {plain: {local_streams: false}}", "baselines.plain.local_streams: expected a trial config key"),
    ("searchspace: {}", "searchspace: expected one of"),
    ("parameters: {recursion_steps: {type: int, low: 1, high: 3}", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_file_fails_with_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    text_of = str(err.value)
    assert text_of.startswith(str(path)) and message in text_of
    assert "\n" not in text_of


def test_unknown_space_name_lists_the_known_ones() -> None:
    with pytest.raises(SpaceError, match=r"unknown search space 'ablate'; known: ablation, full, paper, smoke"):
        load_space("ablate")


def _image_folder(root: Path, corrupt: bool) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "ok.png")
    if corrupt:
        (root / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return root


def test_an_empty_space_is_refused_and_a_fixed_point_needs_its_sample_count(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpaceError, match=r"empty.yaml: parameters: expected at least one parameter to search"):
        load_space(str(empty))
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("study: {num_samples: 1}\nconstants: {recursion_steps: 2}\n")
    assert load_space(str(fixed)).parameters == {}  # as the paper space: a fixed point, said so


def test_the_image_caches_disk_is_said_before_a_study_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from study import preflight
    from tests import formats_fixtures as fx

    fx.write_cub(tmp_path / "data")  # 12 images
    space = tmp_path / "cub.yaml"
    space.write_text(f"study: {{max_epochs: 2}}\nconstants: {{dataset: cub, data_dir: {tmp_path / 'data'}, "
                     f"image_cache: {tmp_path / 'cache'}}}\n"
                     "parameters:\n  image_size: {type: categorical, choices: [32, 448]}\n")
    loaded = load_space(str(space))
    preflight.check_setup(loaded, preflight.check_space(loaded), local=True, gpus_per_trial=0)
    said = capsys.readouterr().out
    # 12 x 448 x 448 x 3 bytes = 0.01 GiB; nothing is built before a trial needs it
    assert f"image cache: 12 images decoded once per node and image size into {tmp_path / 'cache'}" in said
    assert "0.00 GiB at 32 px, 0.01 GiB at 448 px" in said and not (tmp_path / "cache").exists()
