"""How well the noise-aware ending's certainty holds on fresh noise: its stated P(best) against
how often the finalist was truly the best, and its intervals' coverage of the truth.

Reads the studies of a search benchmark run (`python -m benchmarks.search_efficiency --work
DIR`, each study's finalists with their values by seed and their table configurations), whose
replays drew fresh noise from the table's model (trainables.curve_model), so that the truth (each
configuration's mean in that model) is known and was not drawn from. For every study with two
finalists or more, and for each way of stating the certainty (`VARIANTS`):

- reliability: the finalists' stated P(best) in bins of 0.2, against the share of them that were
  truly the best of their study's finalists (a tie of configurations shares it); the expected
  calibration error (ECE: the bins' gaps weighted by their counts);
- recalibration: for each share of P(best) spread evenly over the finalists (study.noise's
  `recalibrate`), the ECE on the even-numbered studies and on the odd ones: the share the study
  uses (`RECALIBRATION`) was fitted on the efficiency table's even studies;
- interval_scales: how often the intervals would hold the truth if 1, 1.1, ... times as wide
  (the study states them `WIDEN` times as wide, a scale fitted on the efficiency table);
- coverage: how often the 95% interval of a finalist's gap to the named best holds the true gap,
  and how often the interval of its mean holds its truth on the fit's seeds (its true mean plus
  the mean shared effect of the finalists' new seeds, known in the model; the interval leaves
  that effect out).

    python -m benchmarks.calibration --work DIR [--table T] [--methods tpe_asha ...] [--out FILE]

Writes FILE (default benchmarks/results/calibration.json) and a reliability plot beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.tables.curves import TABLE
from study.noise import RECALIBRATION, WIDEN

BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# how the ending may state its certainty: study.noise.finalists' options
VARIANTS: dict[str, dict[str, Any]] = {
    "every_run": {"selection": False, "shrink": False},  # the ending before: the choosing run counted
    "new_seeds": {"selection": True, "shrink": False},  # the choosing run left out
    "new_seeds_shrunk": {"selection": True, "shrink": True},  # ... and the means shrunk (empirical Bayes)
    # ... and a share of P(best) spread evenly (study.noise.RECALIBRATION): what the study states
    "recalibrated": {"selection": True, "shrink": True, "recalibrate": RECALIBRATION, "widen": WIDEN},
}
# the widenings of the intervals that `interval_scales` tries
SCALES = (1.0, 1.1, 1.2, 1.3, 1.5)
# the shares of P(best) spread evenly that `fit_recalibration` tries
SHARES = tuple(round(0.05 * i, 2) for i in range(11))


def studies(work: Path, methods: list[str] | None) -> list[dict[str, Any]]:
    """The benchmark's studies that ended with two finalists or more."""
    out = []
    for path in sorted(work.glob("*.json")):
        run = json.loads(path.read_text())
        if (methods is None or run.get("method") in methods) and len(run.get("finalists") or {}) >= 2:
            out.append(run)
    return out


def judge(run: dict[str, Any], truth: Callable[[str], float], seed_effect: Callable[[int], float],
          variant: dict[str, Any]) -> list[dict[str, Any]]:
    """Each finalist of one study as the variant states it, beside the truth: its P(best),
    whether it was truly the best (a share of it, for a tie), and whether its intervals hold."""
    from study.noise import finalists

    values = {k: {int(s): float(v) for s, v in f["values"].items()} for k, f in run["finalists"].items()}
    config = {k: f["config"] for k, f in run["finalists"].items()}
    selection = int(run["train_seed"]) if variant["selection"] else None
    stated, _ = finalists(values, selection_seed=selection, shrink=variant["shrink"],
                          recalibrate=variant.get("recalibrate", 0.0), widen=variant.get("widen", 1.0))
    true = {k: truth(config[k]) for k in values}
    top = max(true.values())
    winners = [k for k in values if true[k] == top]
    best = stated[0].key
    # a mean is on the fit's seeds (every new seed of the finalists: study.noise.two_way)
    shift = statistics.fmean(seed_effect(s) for s in {s for v in values.values() for s in v if s != selection})
    rows = []
    for f in stated:
        on_seeds = true[f.key] + shift
        true_gap = true[f.key] - true[best]
        mean_covered = None if f.low is None or f.high is None else f.low <= on_seeds <= f.high
        gap_covered = None if f.gap_low is None or f.gap_high is None else f.gap_low <= true_gap <= f.gap_high
        # how far off the truth is, in half-widths of the interval (<= 1: covered)
        mean_off = None if f.low is None or f.high is None else _off(on_seeds - f.mean, (f.high - f.low) / 2)
        gap_off = None if f.gap_low is None or f.gap_high is None else \
            _off(true_gap - f.gap, (f.gap_high - f.gap_low) / 2)
        rows.append({"p_best": f.p_best, "best": 1.0 / len(winners) if f.key in winners else 0.0,
                     "mean_covered": mean_covered, "gap_covered": gap_covered, "named": f.key == best,
                     "mean_off": mean_off, "gap_off": gap_off})
    return rows


def _off(error: float, half: float) -> float:
    """An error in half-widths of its interval; a zero-width interval holds only an exact truth."""
    if half > 0:
        return abs(error) / half
    return 0.0 if error == 0 else float("inf")


def reliability(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Stated against realized P(best), in BINS, and the expected calibration error."""
    stated = [r for r in rows if r["p_best"] is not None]
    bins: list[dict[str, Any]] = []
    for low, high in itertools.pairwise(BINS):
        inside = [r for r in stated if low <= r["p_best"] < high or (high == 1.0 and r["p_best"] == 1.0)]
        if inside:
            bins.append({"bin": f"{low:.1f}-{high:.1f}", "finalists": len(inside),
                         "stated": round(statistics.fmean(r["p_best"] for r in inside), 3),
                         "realized": round(statistics.fmean(r["best"] for r in inside), 3)})
    ece = sum(b["finalists"] * abs(b["stated"] - b["realized"]) for b in bins) / max(len(stated), 1)
    named = [r for r in stated if r["named"]]

    def share(key: str) -> float | None:
        held = [r[key] for r in rows if r[key] is not None]
        return round(sum(held) / len(held), 3) if held else None

    return {"finalists": len(stated), "bins": bins, "ece": round(ece, 3),
            "named_stated_p_best": round(statistics.fmean(r["p_best"] for r in named), 3) if named else None,
            "named_truly_best": round(statistics.fmean(r["best"] for r in named), 3) if named else None,
            "gap_interval_coverage": share("gap_covered"), "mean_interval_coverage": share("mean_covered")}


def fit_recalibration(judged: list[tuple[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The share of P(best) to spread evenly over a study's finalists (`SHARES`) that calibrates
    best, from each study's seed and its finalists judged with the shrunk P(best) (`judge`): that
    P(best) recalibrated by each share, its ECE on the even-numbered studies (fitted on) and on the
    odd ones (checked on); the share with the least ECE on the even ones."""
    found = []
    for share in SHARES:
        halves: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
        for seed, rows in judged:
            halves[int(seed) % 2] += [{**r, "p_best": None if r["p_best"] is None
                                       else (1 - share) * r["p_best"] + share / len(rows)} for r in rows]
        found.append({"share": share, "ece_fitted_on": reliability(halves[0])["ece"],
                      "ece_checked_on": reliability(halves[1])["ece"]})
    best = min(found, key=lambda f: (f["ece_fitted_on"], f["share"]))
    return {"fitted_on": "even-numbered studies", "checked_on": "odd-numbered studies", "shares": found,
            "best_share": best["share"], "study_share": RECALIBRATION}


def interval_scales(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How often the intervals of `rows` (judged unwidened) would hold the truth if each
    `SCALES` times as wide: the means' and the gaps'."""
    out = []
    for scale in SCALES:
        share = {}
        for key in ("mean_off", "gap_off"):
            off = [r[key] for r in rows if r[key] is not None]
            share[key] = round(sum(x <= scale for x in off) / len(off), 3) if off else None
        out.append({"scale": scale, "mean_interval_coverage": share["mean_off"],
                    "gap_interval_coverage": share["gap_off"]})
    return out


def calibration_line(reports: dict[str, dict[str, Any]], variant: str = "recalibrated") -> str:
    """The one line the study prints beside its P(best) (study.noise.CALIBRATION), from the
    reports of each table by their files (the first: the table the recalibration was fitted on)."""
    results = [report["variants"][variant] for report in reports.values()]
    tables = [Path(str(report["table"])).stem for report in reports.values()]

    def each(values: list[str]) -> str:
        return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]

    studies = each([str(report["studies"]) for report in reports.values()])
    stated = each([f"{r['named_stated_p_best']:.2f}" for r in results])
    best = each([f"{100 * r['named_truly_best']:.0f}%" for r in results])
    ece = each([f"{r['ece']:.3f}" for r in results])
    return (f"on replayed studies' fresh noise ({studies} studies of the tables {each(tables)}), the named best "
            f"was stated at P(best) {stated} on average and was truly the best in {best} of them; expected "
            f"calibration error {ece} ({each(list(reports))})")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, result in report["variants"].items():
        bins = result["bins"]
        ax.plot([b["stated"] for b in bins], [b["realized"] for b in bins], marker="o",
                label=f"{name} (ECE {result['ece']:.3f})")
    ax.set_xlabel("stated P(best)")
    ax.set_ylabel("truly best, share")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"P(best) on fresh noise: {report['studies']} studies")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a search benchmark's --work folder")
    parser.add_argument("--table", type=Path, default=TABLE, help="the table those studies replayed")
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods' studies")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration.json"))
    args = parser.parse_args(argv)
    if not args.work.is_dir():
        parser.error(f"no benchmark folder at {args.work}")
    from trainables.curve_table import load

    table = load(str(args.table))
    runs = studies(args.work, args.methods)
    if not runs:
        parser.error(f"{args.work} holds no study with two finalists or more")
    last = table.epochs - 1
    effects: dict[int, float] = {}

    def seed_effect(seed: int) -> float:
        if seed not in effects:
            effects[seed] = table.model.seed_effect(seed)[last]
        return effects[seed]

    report: dict[str, Any] = {
        "command": "python -m benchmarks.calibration " + " ".join(sys.argv[1:] if argv is None else argv),
        "table": str(args.table), "studies": len(runs), "methods": sorted({r["method"] for r in runs}),
        "machine": machine(), "variants": {}}
    judged = {name: [(int(run["seed"]), judge(run, table.true_final, seed_effect, variant)) for run in runs]
              for name, variant in VARIANTS.items()}
    for name, variant in VARIANTS.items():
        report["variants"][name] = {**variant, **reliability([row for _, rows in judged[name] for row in rows])}
    report["recalibration"] = fit_recalibration(judged["new_seeds_shrunk"])
    unwidened = [row for _, rows in judged["new_seeds"] for row in rows]
    report["interval_scales"] = {"scales": interval_scales(unwidened), "study_scale": WIDEN}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.out.with_suffix(".png"))
    fit = report["recalibration"]
    print(f"recalibration: least ECE on the even studies with share {fit['best_share']} "
          f"(the study's: {fit['study_share']}); " + ", ".join(
              f"{f['share']}: {f['ece_fitted_on']}/{f['ece_checked_on']}" for f in fit["shares"]))
    for name, result in report["variants"].items():
        print(f"{name:18s} ECE {result['ece']:.3f}  named: stated {result['named_stated_p_best']} truly "
              f"{result['named_truly_best']}  gap coverage {result['gap_interval_coverage']}  "
              f"mean coverage {result['mean_interval_coverage']}")


if __name__ == "__main__":
    main()
