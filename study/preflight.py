"""Checks before Ray starts: every value a trial will use fails here, in one line, not in
every trial (retried).

`check_space` is light (no torch): it builds the TrialConfig of every fixed point and of each
parameter's range ends. `check_setup` then builds, for the same points, every part of a trial's
setup that needs no data and no downloaded weights: the model (on torch's meta device), the
augmentation, the weights' normalisation; and checks a local dataset's images and that a local
Ray can give the GPUs asked for (else Tune would wait for them forever).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from study.errors import StudyInputError, first_line
from study.spaces import SearchSpace, StudySettings


def points(space: SearchSpace) -> list[dict[str, Any]]:
    """Trial configs that cover the space: baselines, enqueued points, each range's ends."""
    out: list[dict[str, Any]] = [*space.baselines.values(), *space.enqueue]
    for p in space.parameters.values():
        ends = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        for end in ends:
            out.append({p.name: int(end) if p.type == "int" and end is not None else end})
    return [space.trial_config(point) for point in out or [{}]]


def check_space(space: SearchSpace) -> list[Any]:
    """The TrialConfig of every covering point (a bad constant or range end fails here)."""
    from trainables.config import TrialConfig
    from trainables.errors import TrialError

    try:
        return [TrialConfig.from_dict(config) for config in points(space)]
    except TrialError as err:
        raise StudyInputError(f"{space.path}: {err}") from None


def check_setup(space: SearchSpace, configs: list[Any], local: bool, gpus_per_trial: float) -> None:
    """Builds what a trial builds before it reads data (see the module's docstring)."""
    import torch

    from trainables.backbones import check_weights
    from trainables.data.augment import get_augmentation
    from trainables.errors import TrialError
    from trainables.model import build_model

    if local and gpus_per_trial > 0 and not torch.cuda.is_available():
        raise StudyInputError(f"--gpus-per-trial {gpus_per_trial:g}: this machine has no CUDA GPU "
                              "(use --address to run on a cluster that has one)")
    try:
        for cfg in {_model_key(c): c for c in configs}.values():
            get_augmentation(cfg.augment)
            if local or not _is_file(cfg.weights):  # a weights file may exist on the workers only
                check_weights(cfg.backbone, cfg.weights)
                if cfg.local_backbone:
                    check_weights(cfg.local_backbone, cfg.weights)
            with torch.device("meta"):  # shapes only: no memory, no weights downloaded
                build_model(dataclasses.replace(cfg.model_config(num_classes=2), weights="none"))
        if local and configs[0].dataset != "synthetic":
            _say_cache_size(configs, _check_local_dataset(configs[0]))
    except (TrialError, ValueError) as err:
        raise StudyInputError(f"{space.path}: {err}") from None


def check_warm_start(settings: Any, out: str | Path, space: SearchSpace) -> str:
    """The warm start's sources (`settings.warm_start`: the flags, or a resumed study's recorded
    Settings) are readable studies under `out`, or elsewhere, that share a parameter with the
    space and go the same way; returns the line that says what the study starts from (empty
    without a warm start). A one-line error otherwise, before Ray starts."""
    if not settings.warm_start:
        return ""
    if settings.searcher == "optuna-stock":
        raise StudyInputError("--warm-start: Ray's stock searcher cannot start from earlier trials; use optuna "
                              "or random")
    from study import warmstart

    return warmstart.load(warmstart.resolve(settings.warm_start, out), space, space.study.directions()).line()


def check_replay(settings: Any, study: StudySettings) -> None:
    """A curve table to replay (--replay-table) is readable and long enough for the study (a
    replayed run draws fresh noise for its seed, so any number of re-runs can replay it).
    `settings`: the flags (StudyOptions) or a record's Settings, which name both alike."""
    table = settings.replay_table
    if table is None:
        return
    if settings.trainable != "replay":
        raise StudyInputError("--replay-table: replaying a table needs --trainable replay")
    from trainables.curve_table import CurveTable, CurveTableError

    try:
        recorded = CurveTable(Path(str(table)))
    except CurveTableError as err:
        raise StudyInputError(f"--replay-table: {err}") from None
    if recorded.epochs < study.max_epochs:
        raise StudyInputError(f"--replay-table: {table} records {recorded.epochs} epochs; the study runs up to "
                              f"{study.max_epochs} (--max-epochs)")


def _is_file(weights: str) -> bool:
    return weights.endswith((".pth", ".pt")) or "/" in weights


def _model_key(cfg: Any) -> tuple[Any, ...]:
    return (cfg.backbone, cfg.local_backbone, cfg.weights, cfg.add_on, cfg.local_stream, cfg.augment,
            cfg.refine, cfg.patch_size)


def _check_local_dataset(cfg: Any) -> int:
    """The dataset folder holds its format and every image opens (a corrupt file fails the
    study now, by name); returns the number of images."""
    from trainables.data.base import verify_image
    from trainables.data.formats import READERS

    assert cfg.data_dir is not None
    root = Path(cfg.data_dir)
    if not root.is_dir():
        raise StudyInputError(f"--data-dir {root} is not a folder")
    split = READERS[cfg.dataset](root)
    images = [*split.train, *split.test]
    for sample in images:
        verify_image(sample.path)
    return len(images)


def _say_cache_size(configs: list[Any], count: int) -> None:
    """States, before any trial starts, the disk the decoded-image cache will take on a node."""
    import shutil

    from trainables.data.cache import cache_bytes, cache_folder

    cfg = configs[0]
    if cfg.image_cache == "off":
        return
    folder = cache_folder(cfg.image_cache)
    sizes = sorted({c.image_size for c in configs})
    each = ", ".join(f"{cache_bytes(count, size) / 2**30:.2f} GiB at {size} px" for size in sizes)
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    print(f"image cache: {count} images decoded once per node and image size into {folder} ({each}; "
          f"{shutil.disk_usage(probe).free / 2**30:.0f} GiB free here; image_cache: off to decode every epoch)",
          flush=True)


# ---------------------------------------------------------------- Tune's storage (a bucket on a cluster)


def check_storage(uri: str, timeout_s: float = 5.0) -> None:
    """Tune's storage (`--storage`) answers before Ray starts: a remote URI's endpoint is
    reachable, its bucket exists and can be listed with the credentials found (pyarrow's own
    rules: the URI's query, AWS_ENDPOINT_URL, AWS_* variables). A local path needs nothing."""
    if "://" not in uri or uri.startswith("file://"):
        return
    from urllib.parse import parse_qs, urlsplit

    import pyarrow.fs as pafs

    parts = urlsplit(uri)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    endpoint = query.get("endpoint_override") or _endpoint_from_env(parts.scheme)
    if endpoint:
        scheme = query.get("scheme", "https")
        _reachable(endpoint if "://" in endpoint else f"{scheme}://{endpoint}", uri, timeout_s)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        bucket = path.split("/", 1)[0]
        info = fs.get_file_info(bucket)
    except (OSError, ValueError) as err:
        raise StudyInputError(f"--storage {uri}: {first_line(err)}") from None
    if info.type == pafs.FileType.NotFound:
        raise StudyInputError(f"--storage {uri}: bucket {bucket!r} does not exist (create it first; the study "
                              "does not create buckets)")


def check_no_stale_experiments(record: Any) -> None:
    """The Tune experiments a new study (or an extension) is about to start are not in Tune's
    storage already, left by an earlier study of the same name whose folder was removed: Tune
    would restore them, with their trials and configs, as this study's. A one-line error (nothing
    is deleted)."""
    import re

    from ray.tune import Tuner

    mine = rf"{re.escape(record.experiment)}(-finalists(-\d+)?|-confirm)?"
    later = "" if record.extensions else rf"|{re.escape(record.name)}-ext\d+(-finalists(-\d+)?|-confirm)?"
    pattern = re.compile(mine + later)
    names = [n for n in _listing(record.stores.storage_path) if pattern.fullmatch(n)]
    stale = sorted(n for n in names if Tuner.can_restore(record.stores.tune_path(n)))
    if stale:
        raise StudyInputError(f"Tune's storage {record.stores.storage_path} holds experiment(s) {', '.join(stale)} of "
                              f"an earlier study named {record.name!r}: Tune would restore them as this study's; move "
                              "them away, or choose another --name")


def _listing(storage: str) -> list[str]:
    """The names of the entries at the top of Tune's storage (local or a URI)."""
    import pyarrow.fs as pafs

    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(storage)
        return [info.base_name for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))]
    except (OSError, ValueError) as err:
        raise StudyInputError(f"--storage {storage}: {first_line(err)}") from None


def _endpoint_from_env(scheme: str) -> str | None:
    import os

    if scheme not in ("s3", "s3a"):
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _reachable(endpoint: str, uri: str, timeout_s: float) -> None:
    """A TCP connection to the endpoint opens within timeout_s (pyarrow would retry for longer)."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(endpoint)
    host, port = where.hostname, where.port or (443 if where.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise StudyInputError(f"--storage {uri}: the storage endpoint {host}:{port} is unreachable "
                              f"({err.strerror or err})") from None
