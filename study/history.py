"""A trial's history as every view of a study reads it (the tidy table, the summary, the
ranking, the report and MLflow's sync): its reports in the order Tune saved them, with the
reports of an earlier attempt dropped where a retry re-ran those epochs.

A trial that fails is restored from its last checkpoint and re-runs the epochs after it; the
earlier attempt's reports of those epochs (and of any epoch it reached beyond them) are not
the trial's history any more. The last report kept is Tune's `last_result` of the trial.
No heavy import: it works on the DataFrame it is given.
"""

from __future__ import annotations

from typing import Any

from study.keys import EPOCH


def final_attempt(frame: Any) -> Any:
    """A trial's per-epoch rows (Tune's result table, in the order reported) as its final
    attempt left them: one row per epoch, ascending; an empty frame if it reported none."""
    if frame is None or frame.empty or EPOCH not in frame:
        import pandas as pd

        return pd.DataFrame(columns=[EPOCH])
    frame = frame.dropna(subset=[EPOCH])
    epochs = [int(e) for e in frame[EPOCH]]
    keep: list[int] = []
    for i, epoch in enumerate(epochs):
        while keep and epochs[keep[-1]] >= epoch:  # a retry went back to `epoch`: what followed is void
            keep.pop()
        keep.append(i)
    kept = frame.iloc[keep]
    return kept.assign(**{EPOCH: [epochs[i] for i in keep]}).reset_index(drop=True)

