"""One colour per estimator and per optimizer, the same in every figure of every report and of the results
page; coinciding curves and points drawn so that neither hides the other, and named.

Colours. A label is keyed by its name (``name_of``: its first word, which is the estimator's name, or the
optimizer's where only the optimizer varies; a same-point member "rloo (S=2)" and a study trajectory
"rloo (study trajectory)" are rloo). Every estimator and optimizer of ``conf/`` has a fixed colour
(``COLOURS``), so rloo is the same blue in a toy report, a VAE report and the page, whatever else a figure
shows; a name not listed gets one of ``SPARE`` chosen from a digest of the name (stable across figures),
the next free one where two would collide in one figure (and so does a listed name whose colour another
name of the figure already has). Labels that share a name (rloo S=2 and rloo S=4, adam lr=0.01 and adam
lr=0.1) share its hue: the first in sorted order the colour itself, the others lighter.

Coinciding values. ``coinciding`` finds labels whose drawn values agree at every drawn position: exactly
(to rounding: "rebar = relax") or within ``CLOSE`` of the axis's span, where they are drawn (on the log
scale for a log axis): "rloo ≈ unordered_set", less than a line's width apart. ``styles`` gives each member
of such a group its own dash pattern and marker (the first solid with filled circles, the next dashed with
hollow squares, …) and a legend text that names the group, so that a reader sees both and knows why they
overlap.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from matplotlib import colors as mcolors

STUDY_SUFFIX = " (study trajectory)"

COLOURS: dict[str, str] = {
    # estimators (conf/estimator): the ones most often compared in the most distinct colours
    "rloo": "#1f77b4",  # blue
    "score_function": "#ff7f0e",  # orange
    "st": "#2ca02c",  # green
    "reinmax": "#d62728",  # red
    "gumbel": "#9467bd",  # purple
    "gumbel_st": "#8c564b",  # brown
    "gumbel_rao": "#e377c2",  # pink
    "disarm": "#7f7f7f",  # grey
    "rebar": "#bcbd22",  # olive
    "relax": "#17becf",  # cyan
    "unordered_set": "#393b79",  # indigo
    "gst": "#637939",  # dark olive
    "leg": "#8c6d31",  # dark gold
    "measure_valued": "#843c39",  # dark red
    "vimco": "#7b4173",  # plum
    "lax": "#008080",  # teal
    "exact": "#000000",  # black
    "reparam": "#e7ba52",  # gold
    "none": "#a9a9a9",  # light grey
    "indecater": "#6b6ecf",  # periwinkle
    "rodeo": "#b5cf6b",  # light green
    "reinmax_cv": "#e7969c",  # rose
    "reinmax_rao": "#ad494a",  # brick
    "vq_st": "#1f77b4",  # the vector-quantizer estimators meet no categorical one in a figure
    "vq_rotation": "#d62728",
    "vq_stochastic": "#2ca02c",
    # optimizers (conf/optimizer; lookahead is named after its inner optimizer: lookahead_adam)
    "adam": "#1f77b4",
    "adamw": "#ff7f0e",
    "sgd": "#2ca02c",
    "lazy_adam": "#d62728",
    "sparse_adam": "#9467bd",
    "lookahead": "#8c564b",
    "lookahead_adam": "#8c564b",
    "lookahead_sgd": "#e377c2",
    "lookahead_adamw": "#008080",
    "nadamw": "#bcbd22",
    "schedule_free_adamw": "#17becf",
    "muon": "#7f7f7f",
    "shampoo": "#393b79",
    "soap": "#637939",
}
"""The fixed colour of each estimator and optimizer (distinct among the estimators that fit one latent kind,
and among the optimizers: they can meet in a figure; tests check it for every configured one)."""

SPARE = (
    "#5254a3",
    "#cedb9c",
    "#bd9e39",
    "#d6616b",
    "#a55194",
    "#ce6dbd",
    "#9c9ede",
    "#e7cb94",
    "#8ca252",
    "#6baed6",
    "#fd8d3c",
    "#74c476",
)
"""Colours for names not in ``COLOURS`` (a custom estimator or optimizer, one added since)."""

CLOSE = 0.01
"""Distance, as a fraction of the axis's span, below which two drawn values read as the same ("≈"): about a
line's width on these figures' axes."""

EXACT = 1e-9
"""Relative difference below which two drawn values are the same up to rounding ("=")."""


def name_of(label: str) -> str:
    """The estimator or optimizer a label is named after: its first word ("rloo S=2" → rloo, "rloo (S=2)"
    → rloo, "gumbel (study trajectory)" → gumbel)."""
    text = str(label)
    if text.endswith(STUDY_SUFFIX):
        text = text[: -len(STUDY_SUFFIX)]
    return text.split(" ", 1)[0] if text.strip() else text


def base_colour(name: str, taken: Iterable[str] = ()) -> str:
    """The fixed colour of ``name`` unless another name of the figure has it (``taken``); else a spare one
    from its digest, moved on past those taken; past every spare one, a hue of its own from the digest."""
    taken = set(taken)
    if name in COLOURS and COLOURS[name] not in taken:
        return COLOURS[name]
    start = zlib.crc32(name.encode())
    for offset in range(len(SPARE)):
        colour = SPARE[(start + offset) % len(SPARE)]
        if colour not in taken:
            return colour
    for offset in range(360):
        colour = mcolors.to_hex(mcolors.hsv_to_rgb(((start + 37 * offset) % 360 / 360, 0.7, 0.6)))
        if colour not in taken:
            return colour
    return mcolors.to_hex(mcolors.hsv_to_rgb((start % 360 / 360, 0.7, 0.6)))


def shade(colour: str, index: int, count: int) -> tuple[float, float, float]:
    """The ``index``-th of ``count`` shades of ``colour``: the first the colour itself, the others ever
    lighter (mixed with white, up to 60%: still the same hue, never white)."""
    rgb = np.array(mcolors.to_rgb(colour))
    mixed = rgb + (1 - rgb) * 0.6 * index / max(count, 1)
    return tuple(float(value) for value in np.clip(mixed, 0, 1))


def palette_for(labels: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per label, keyed by its name (module docstring): the same name's colour in every
    figure; labels that share a name in shades of it."""
    labels = sorted({str(label) for label in labels})
    by_name: dict[str, list[str]] = {}
    for label in labels:
        by_name.setdefault(name_of(label), []).append(label)
    # Names with a fixed colour first (in order, so that two sharing one, like rloo and vq_st, settle the
    # same way in every figure), then the others among what is left.
    names = sorted(by_name, key=lambda name: (name not in COLOURS, name))
    taken: set[str] = set()
    palette = {}
    for name in names:
        colour = base_colour(name, taken)
        taken.add(colour)
        members = by_name[name]
        for index, label in enumerate(members):
            palette[label] = shade(colour, index, len(members))
    return palette


# ---- Coinciding values -----------------------------------------------------------------------------------


def same_values(first: np.ndarray, second: np.ndarray, tolerance: np.ndarray | float, relative: bool) -> bool:
    """Whether two series drawn at the same positions agree everywhere both are finite (with at least one
    such position, and missing at the same positions): within ``tolerance`` of each other (absolute, per
    position or for all), or, with ``relative``, within ``tolerance`` times the larger magnitude."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape:
        return False
    both = np.isfinite(first) & np.isfinite(second)
    if not both.any() or (np.isfinite(first) != np.isfinite(second)).any():
        return False
    a, b = first[both], second[both]
    bound = np.broadcast_to(np.asarray(tolerance, dtype=float), first.shape)[both]
    if relative:
        scale = np.maximum(np.abs(a), np.abs(b))
        bound = bound * np.where(scale > 0, scale, 1.0)
    return bool(np.all(np.abs(a - b) <= bound))


@dataclass(frozen=True)
class Group:
    """Labels whose drawn values coincide: ``exact`` (to rounding) or only within ``CLOSE`` of the axis."""

    labels: tuple[str, ...]
    exact: bool

    @property
    def text(self) -> str:
        """ "rebar = relax", "rloo ≈ unordered_set"."""
        return f" {'=' if self.exact else '≈'} ".join(self.labels)


def drawn(values: np.ndarray, log: bool) -> np.ndarray:
    """Values as the axis places them: log10 on a log axis (non-positive values are not drawn there)."""
    values = np.asarray(values, dtype=float)
    if not log:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def coinciding(
    series: Mapping[str, np.ndarray],
    log: bool = False,
    spans: np.ndarray | float | None = None,
    tolerance: float = CLOSE,
) -> list[Group]:
    """Groups of two or more labels whose series (values at the same positions) a reader cannot tell
    apart: within ``tolerance`` of the axis's span (``spans``: per position, or one for all; default the
    span of every drawn value, on the log scale with ``log``). A group is exact when every pair agrees to
    ``EXACT`` (relative). Labels in sorted order."""
    labels = sorted(series)
    placed = {label: drawn(series[label], log) for label in labels}
    if spans is None:
        every = np.concatenate([values.ravel() for values in placed.values()]) if placed else np.array([])
        every = every[np.isfinite(every)]
        spans = float(every.max() - every.min()) if len(every) else 0.0
    bound = tolerance * np.asarray(spans, dtype=float)
    groups: list[list[str]] = []
    for label in labels:
        for group in groups:
            if same_values(placed[group[0]], placed[label], bound, relative=False):
                group.append(label)
                break
        else:
            groups.append([label])
    found = []
    for group in groups:
        if len(group) > 1:
            exact = all(
                same_values(series[group[0]], series[other], EXACT, relative=True) for other in group[1:]
            )
            found.append(Group(tuple(group), exact))
    return found


LINES = ("-", (0, (5, 3)), (0, (1, 2)), (0, (6, 2, 1, 2)))
MARKERS = ("o", "s", "^", "D")


@dataclass(frozen=True)
class Style:
    """How one label is drawn: its line style, marker, whether the marker is filled, and its legend text."""

    line: object = "-"
    marker: str = "o"
    filled: bool = True
    legend: str = ""


def styles(labels: Iterable[str], groups: list[Group]) -> dict[str, Style]:
    """Per label, its ``Style``: plain for a label that coincides with none; within a group, the k-th member
    with the k-th dash pattern and marker (hollow after the first), and the legend "relax (= rebar)"."""
    found = {label: Style(legend=str(label)) for label in labels}
    for group in groups:
        for index, label in enumerate(group.labels):
            others = [other for other in group.labels if other != label]
            mark = "=" if group.exact else "≈"
            found[label] = Style(
                LINES[index % len(LINES)],
                MARKERS[index % len(MARKERS)],
                index == 0,
                f"{label} ({mark} {', '.join(others)})",
            )
    return found


def groups_note(groups: list[Group]) -> str:
    """ "drawn on top of each other: rebar = relax; rloo ≈ unordered_set" (empty without groups)."""
    if not groups:
        return ""
    return "coinciding (distinct dashes and markers): " + "; ".join(group.text for group in groups)
