from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
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


@pytest.mark.slow  # the command, as a user starts it
def test_cli_rejects_a_bad_space_in_one_line_before_ray_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {mode: maximise}\n")
    proc = subprocess.run([sys.executable, "-m", "study.run", "--space", str(bad), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: study.mode: expected min or max, got 'maximise'"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus-per-trial", "-1"], "expected a number >= 0"),
        (["--scheduler", "bohb"], "invalid choice: 'bohb'"),
        (["--num-samples", "0"], "expected an integer >= 1"),
        (["--epoch-budget", "0"], "expected an integer >= 1"),
        (["--space", "smoke", "--backbone", "vit"], "backbone: unknown backbone 'vit'"),
        (["--space", "smoke", "--dataset", "cub", "--data-dir", "/no/such/dir"], "--data-dir /no/such/dir is not a folder"),
        (["--space", "smoke", "--resume", "--name", "nothing-here"], "no study 'nothing-here'"),
        (["--space", "smoke", "--backbone", "tiny", "--max-epochs", "2", "--seed", "x"], "invalid int value: 'x'"),
        *([] if torch.cuda.is_available() else
          [(["--space", "smoke", "--gpus-per-trial", "1"], "--gpus-per-trial 1: this machine has no CUDA GPU")]),
    ],
)
@pytest.mark.slow  # the command, as a user starts it
def test_cli_flag_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "study.run", "--out", str(tmp_path / "runs"), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


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


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown space", "unknown search space 'ablate'; known: ablation, full, paper, smoke"),
        ("dataset without folder", "data_dir"),
        ("folder of another format", "image folder train/ split"),
        ("corrupt image", "cannot read image"),
    ],
)
@pytest.mark.slow  # the command, as a user starts it
def test_cli_bad_data_and_names_fail_in_one_line_before_ray_starts(tmp_path: Path, case: str, message: str) -> None:
    args = {
        "unknown space": ["--space", "ablate"],
        "dataset without folder": ["--space", "smoke", "--dataset", "cub"],
        "folder of another format": ["--space", "smoke", "--dataset", "imagefolder", "--data-dir", str(tmp_path)],
        "corrupt image": ["--space", "smoke", "--dataset", "imagefolder", "--data-dir",
                          str(_image_folder(tmp_path / "data", corrupt=True))],
    }[case]
    proc = subprocess.run([sys.executable, "-m", "study.run", "--out", str(tmp_path / "runs"), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr[-2000:]
    if case == "corrupt image":
        assert "broken.jpg" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs" / "mlflow.db").exists()  # before anything started


@pytest.mark.slow  # a fresh interpreter
def test_cli_module_imports_no_heavy_library() -> None:
    code = "import sys, study.run; print(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("constants", "message"),
    [
        ("augment: flip_rotate", "augment: expected one of none, flip, flip_crop, got 'flip_rotate'"),
        ("synthetic_classes: 40", "synthetic num_classes must be in [2, 16], got 40"),
        ("weights: imagenet", "weights: backbone 'tiny' has no pretrained weights 'imagenet'"),
        ("backbone: resnet18\n  weights: IMAGENET1K_V9", "unknown weights 'IMAGENET1K_V9' for backbone 'resnet18'"),
        ("weights: /no/such/weights.pth", "weights file not found: /no/such/weights.pth"),
        ("refine: spiral", "refine: expected one of repeat, zoom, got 'spiral'"),
    ],
)
@pytest.mark.slow  # the command, as a user starts it
def test_every_bad_trial_value_fails_before_ray_starts(tmp_path: Path, constants: str, message: str) -> None:
    """Values that pass the schema but would fail in every trial (and be retried) fail on the
    driver, in one line: the trial's setup is built there without data or weights."""
    space = tmp_path / "bad.yaml"
    space.write_text(f"study: {{max_epochs: 2}}\nconstants:\n  {constants}\n"
                     "parameters:\n  crop_scale: {type: float, low: 0.3, high: 1.0}\n")
    proc = subprocess.run([sys.executable, "-m", "study.run", "--space", str(space), "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_an_empty_space_is_refused_and_a_fixed_point_needs_its_sample_count(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpaceError, match=r"empty.yaml: parameters: expected at least one parameter to search"):
        load_space(str(empty))
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("study: {num_samples: 1}\nconstants: {recursion_steps: 2}\n")
    assert load_space(str(fixed)).parameters == {}  # as the paper space: a fixed point, said so


@pytest.mark.slow  # a fresh interpreter
def test_a_space_typo_answers_without_importing_any_heavy_library(tmp_path: Path) -> None:
    """A typo in a space or a flag is reported before torch, Ray, MLflow or Optuna is imported,
    so it answers in about the time --help does."""
    bad = tmp_path / "typo.yaml"
    bad.write_text("parameters:\n  crop_scal: {type: float, low: 0.2, high: 1.0}\n")
    code = ("import sys\nfrom study.cli import main\n"
            f"rc = main(['--space', {str(bad)!r}, '--out', {str(tmp_path / 'runs')!r}])\n"
            "print(rc, sorted(m for m in ('torch', 'torchvision', 'ray', 'mlflow', 'optuna', 'pandas') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr[-2000:]
    assert "parameters.crop_scal: expected a trial config key" in proc.stderr


def test_the_image_caches_disk_is_said_before_a_study_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from study import preflight
    from tests.trainables import formats_fixtures as fx

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
