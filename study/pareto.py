"""Pareto sorting of points with several objectives, each signed so that larger is better:
dominance, non-dominated fronts and NSGA-II's crowding distance. One module that MO-ASHA's rungs
(study.policies.rungs), the summary's front and the report's cost fronts all use. Pure
functions, standard library only."""

from __future__ import annotations

import math

Values = tuple[float, ...]  # a point's objectives, each signed so that larger is better


def dominates(a: Values, b: Values) -> bool:
    """Whether `a` is at least as good as `b` in every objective and better in one."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def fronts(points: list[Values]) -> list[list[int]]:
    """Non-dominated sorting: the indices of `points`, front by front (the first front is
    dominated by none)."""
    left = set(range(len(points)))
    out = []
    while left:
        front = sorted(i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i))
        out.append(front)
        left -= set(front)
    return out


def crowding(points: list[Values], front: list[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each point of a front (the ends of every objective:
    infinite)."""
    out = dict.fromkeys(front, 0.0)
    for k in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: points[i][k])
        low, high = points[ordered[0]][k], points[ordered[-1]][k]
        out[ordered[0]] = out[ordered[-1]] = math.inf
        if high > low:
            for before, here, after in zip(ordered, ordered[1:], ordered[2:], strict=False):
                out[here] += (points[after][k] - points[before][k]) / (high - low)
    return out


def order(points: list[Values]) -> list[int]:
    """The indices of `points`, best first: by front, then by crowding distance (larger first),
    then by index (earlier first)."""
    out = []
    for front in fronts(points):
        distance = crowding(points, front)
        out += sorted(front, key=lambda i: (-distance[i], i))
    return out
