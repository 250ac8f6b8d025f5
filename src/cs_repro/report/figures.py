"""Figures, drawn as reviewer 2 asked: only the main lines by default, thick lines, shaded bands
(mean ± std over seeds, ``fill_between``) instead of error bars, one heading per panel naming
network and dataset, large fonts, and ONE shared legend below the panels.

Every function returns the :class:`~matplotlib.figure.Figure` (or None when there is nothing to
draw) and, when ``out_dir`` is given, saves ``<name>.png`` and ``<name>.pdf`` there.  Figures are
built without pyplot, so nothing global is kept alive.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

from cs_repro.methods import ABLATION_METHODS, METHODS  # noqa: E402
from cs_repro.report.aggregate import (  # noqa: E402
    CHAIN_METHODS,
    Aggregates,
    Group,
    matched_sparsity,
)
from cs_repro.report.rows import (  # noqa: E402
    pretty_dataset,
    pretty_method,
    pretty_network,
    pretty_variant,
)

LINEWIDTH = 3.0
TICK_PT = 13
LABEL_PT = 15
TITLE_PT = 16
LEGEND_PT = 13
BAND_ALPHA = 0.2
PANEL_W, PANEL_H = 5.6, 4.4

X_REMAINING = "Remaining weights (%)"
Y_ACCURACY = "Test accuracy (%)"

#: Methods drawn only with ``show_optional=True`` (besides the non-"rewind" ticket controls):
#: IMP-C and the ablations, which would crowd the headline and pruning figures.
OPTIONAL_METHODS = ABLATION_METHODS | {"imp_c"}

#: One colour per method, none shared, so that every line in a figure can be told apart (cs_repro.methods).
_COLORS = {name: METHODS.get(name).color for name in METHODS}
_SPARE_COLORS = ("#7f7f7f", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d")
_VARIANT_STYLE = {"rewind": "-", "pruned": "-", "finetuned": "--", "reinit": "--",
                  "random": ":"}
_MARKERS = {"rewind": "o", "pruned": "o", "finetuned": "s", "reinit": "v", "random": "x"}
DENSE_COLOR = "#333333"
DENSE_LABEL = "Dense (mean ± std)"


def method_color(method: str) -> str:
    if method in _COLORS:
        return _COLORS[method]
    return _SPARE_COLORS[sum(map(ord, method)) % len(_SPARE_COLORS)]


def panel_title(network: str, dataset: str) -> str:
    return f"{pretty_network(network)} on {pretty_dataset(dataset)}"


def _pct(value: float, _pos: object = None) -> str:
    return f"{value:g}"


def _new_figure(n_panels: int, n_rows: int = 1) -> tuple[Figure, list[list[Axes]]]:
    fig = Figure(figsize=(PANEL_W * n_panels, PANEL_H * n_rows + 1.2), layout="constrained")
    FigureCanvasAgg(fig)  # a real canvas, so that text can be measured before saving
    axes = fig.subplots(n_rows, n_panels, squeeze=False)
    return fig, [list(row) for row in axes]


def _style_axes(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.tick_params(axis="both", which="both", labelsize=TICK_PT)
    ax.grid(True, which="major", alpha=0.3)


def _remaining_axis(ax: Axes) -> None:
    """Log scale, most sparse on the right."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_pct))
    ax.xaxis.set_minor_formatter(NullFormatter())


#: Most legend columns tried; fewer are used when the entries would not fit the figure's width.
LEGEND_MAX_COLUMNS = 4


def _shared_legend(fig: Figure, axes: list[Axes]) -> None:
    """ONE legend below the panels with each label once, in drawing order, laid out in as many columns as
    fit the figure's width (measured on the renderer, not guessed from label lengths)."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if not handles:
        return
    renderer = fig.canvas.get_renderer()
    for ncols in range(min(len(labels), LEGEND_MAX_COLUMNS), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols,
                            fontsize=LEGEND_PT, frameon=False)
        if legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width or ncols == 1:
            break
        legend.remove()
    width = legend.get_window_extent(renderer).width
    if width > 0.98 * fig.bbox.width:  # even one column is too wide: widen the figure to hold it
        fig.set_figwidth(fig.get_figwidth() * width / (0.95 * fig.bbox.width))


def _dense_band(ax: Axes, agg: Aggregates, network: str) -> None:
    dense = agg.dense(network)
    if dense is None:
        return
    mean, std = 100 * dense.test_acc_mean, 100 * dense.test_acc_std
    ax.axhspan(mean - std, mean + std, color=DENSE_COLOR, alpha=0.15, linewidth=0)
    ax.axhline(mean, color=DENSE_COLOR, linewidth=LINEWIDTH, linestyle="-.", label=DENSE_LABEL)


def _curve_label(method: str, variant: str) -> str:
    if variant in ("rewind",):
        return pretty_method(method)
    return f"{pretty_method(method)} ({pretty_variant(variant)})"


def _draw_groups(ax: Axes, groups: list[Group], method: str, variant: str) -> None:
    """One line (mean) with a shaded band (mean ± std) over remaining weights."""
    groups = sorted(groups, key=lambda g: -g.remaining_mean)
    x = [100 * g.remaining_mean for g in groups]
    y = [100 * g.test_acc_mean for g in groups]
    lo = [100 * (g.test_acc_mean - g.test_acc_std) for g in groups]
    hi = [100 * (g.test_acc_mean + g.test_acc_std) for g in groups]
    color = method_color(method)
    ax.fill_between(x, lo, hi, color=color, alpha=BAND_ALPHA, linewidth=0)
    ax.plot(x, y, color=color, linewidth=LINEWIDTH, linestyle=_VARIANT_STYLE.get(variant, "-."),
            marker=_MARKERS.get(variant, "d"), markersize=6, label=_curve_label(method, variant))


def _save(fig: Figure, out_dir: Path | None, name: str) -> None:
    if out_dir is None:
        return
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{name}.png", dpi=150)
    fig.savefig(out_dir / f"{name}.pdf", metadata={"CreationDate": None})  # same data, same bytes


# ---------------------------------------------------------------------------------------------
def _accuracy_panels(agg: Aggregates, track: str, include: Callable[[str, str], bool],
                     out_dir: Path | None, name: str) -> Figure | None:
    """Test accuracy vs remaining weights, one panel per network, for the (method, variant) pairs of
    `track` that `include` accepts; dense band, shared legend.  A panel where only one method ran says
    so, so that a missing baseline is not mistaken for one hidden behind another line."""
    networks = [n for n in agg.networks() if agg.methods(n, track)]
    if not networks:
        return None
    fig, axes = _new_figure(len(networks))
    for ax, network in zip(axes[0], networks):
        _dense_band(ax, agg, network)
        drawn = set()
        for method in agg.methods(network, track):
            for variant in agg.variants(network, method, track):
                groups = agg.groups_for(network, method, variant, track) if include(method, variant) else []
                if groups:
                    _draw_groups(ax, groups, method, variant)
                    drawn.add(method)
        if len(drawn) == 1:
            ax.text(0.03, 0.03, f"only {pretty_method(next(iter(drawn)))} ran on this network",
                    transform=ax.transAxes, fontsize=TICK_PT, color=DENSE_COLOR, va="bottom")
        _remaining_axis(ax)
        _style_axes(ax, X_REMAINING, Y_ACCURACY)
        ax.set_title(panel_title(network, agg.dataset(network)), fontsize=TITLE_PT)
    _shared_legend(fig, axes[0])
    _save(fig, out_dir, name)
    return fig


def ticket_search(agg: Aggregates, out_dir: Path | None = None,
                  show_optional: bool = False) -> Figure | None:
    """Headline: test accuracy of retrained tickets vs remaining weights, one panel per network.

    Main lines: every ticket-track method's "rewind" tickets except IMP-C.  With
    ``show_optional``: IMP-C and the controls (variants other than "rewind", e.g. reinit, random).
    """
    def include(method: str, variant: str) -> bool:
        return show_optional or (method not in OPTIONAL_METHODS and variant == "rewind")

    return _accuracy_panels(agg, "ticket", include, out_dir, "ticket_search")


def pruning(agg: Aggregates, out_dir: Path | None = None, show_optional: bool = False) -> Figure | None:
    """Pruning track (no rewinding): accuracy of the pruned / fine-tuned networks of every method that ran;
    the ablations only with ``show_optional`` (one of them can sit far below the rest and squash the axis)."""
    return _accuracy_panels(agg, "pruning", lambda method, variant: show_optional or method not in OPTIONAL_METHODS,
                            out_dir, "pruning")


def _search_label(method: str, mode: str) -> str:
    name = pretty_method(method)
    if mode == "parallel":
        return f"{name}, parallel (longest single run)"
    return name if method in CHAIN_METHODS else f"{name}, sequential"


def search_cost(agg: Aggregates, out_dir: Path | None = None,
                show_optional: bool = False) -> Figure | None:
    """Best ticket so far vs training epochs (top row) and wall-clock seconds (bottom row)."""
    networks = [n for n in agg.networks() if agg.methods(n, "ticket", "rewind")]
    if not networks:
        return None
    fig, axes = _new_figure(len(networks), n_rows=2)
    units = (("epochs", "Training epochs spent (epochs)", "cost in epochs"),
             ("seconds", "Wall-clock time spent (s)", "cost in wall-clock seconds"))
    for row, (unit, xlabel, what) in enumerate(units):
        for ax, network in zip(axes[row], networks):
            _dense_band(ax, agg, network)
            for method in agg.methods(network, "ticket", "rewind"):
                if method in OPTIONAL_METHODS and not show_optional:
                    continue
                for mode, style in (("sequential", "-"), ("parallel", "--")):
                    curve = agg.search_curve(network, method, mode, unit)  # type: ignore[arg-type]
                    if curve is None:
                        continue
                    ax.plot([p.cost for p in curve.points],
                            [100 * p.best_accuracy for p in curve.points],
                            color=method_color(method), linestyle=style, linewidth=LINEWIDTH,
                            drawstyle="steps-post", marker="o", markersize=5,
                            label=_search_label(method, mode))
            _style_axes(ax, xlabel, "Best test accuracy so far (%)")
            ax.set_title(f"{panel_title(network, agg.dataset(network))}\n({what})", fontsize=TITLE_PT)
    _shared_legend(fig, axes[0] + axes[1])
    _save(fig, out_dir, "search_cost")
    return fig


def _short_layer(name: str) -> str:
    for suffix in (".weight", ".conv.weight"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.replace("layer", "L").replace("features", "f").replace("classifier", "fc")


def closest_group(groups: list[Group], target: float) -> Group | None:
    """Group whose mean remaining weights is closest to ``target`` in log scale (ties: the more accurate)."""
    if not groups:
        return None
    return min(groups, key=lambda g: (abs(math.log(g.remaining_mean / target)), -g.test_acc_mean))


def layer_pair(agg: Aggregates, network: str, methods: tuple[str, ...] = ("cs", "imp"),
               target: float | None = None) -> tuple[list[tuple[str, Group]], bool]:
    """The tickets whose layers are compared, and whether they are at matched sparsity.

    With ``target``: each method's ticket closest to it.  Otherwise the sparsest ticket of the first method
    for which every other method has a ticket at matched sparsity (MATCHED_SPARSITY_RULE); when there is
    none, the ticket of the first method that the others come closest to."""
    def with_layers(method: str) -> list[Group]:
        return [g for g in agg.groups_for(network, method) if g.layer_remaining]

    candidates = with_layers(methods[0])
    others = {m: groups for m in methods[1:] if (groups := with_layers(m))}
    if target is not None or not candidates:
        # a given target, or no ticket of the first method: each method's ticket nearest to the target (else
        # to the median ticket of the first method that has any)
        present = [groups for m in methods if (groups := with_layers(m))]
        if not present:
            return [], False
        goal = target if target is not None else present[0][len(present[0]) // 2].remaining_mean
        chosen = [(m, g) for m in methods if (g := closest_group(with_layers(m), goal)) is not None]
        matched = all(matched_sparsity(g.remaining_mean, chosen[0][1].remaining_mean) for _, g in chosen)
        return chosen, matched

    def mismatch(candidate: Group) -> float:
        return max((abs(math.log(closest_group(groups, candidate.remaining_mean).remaining_mean
                                 / candidate.remaining_mean)) for groups in others.values()), default=0.0)

    def all_matched(candidate: Group) -> bool:
        return all(matched_sparsity(closest_group(groups, candidate.remaining_mean).remaining_mean,
                                    candidate.remaining_mean) for groups in others.values())

    matched_ones = [g for g in candidates if all_matched(g)]
    anchor = (min(matched_ones, key=lambda g: g.remaining_mean) if matched_ones
              else min(candidates, key=lambda g: (mismatch(g), g.remaining_mean)))
    chosen = [(methods[0], anchor)] + [(m, closest_group(groups, anchor.remaining_mean))
                                       for m, groups in others.items()]
    return chosen, bool(matched_ones)


def layer_sparsity(agg: Aggregates, out_dir: Path | None = None, target: float | None = None,
                   methods: tuple[str, ...] = ("cs", "imp")) -> Figure | None:
    """Remaining weights per layer of each method's ticket at a common overall sparsity (see
    :func:`layer_pair`); a panel whose tickets are not at matched sparsity says so in its title."""
    networks = [n for n in agg.networks()
                if any(agg.groups_for(n, m) for m in methods)]
    if not networks:
        return None
    fig, axes = _new_figure(len(networks))
    fig.set_figwidth(max(fig.get_figwidth(), 7.5 * len(networks)))
    for ax, network in zip(axes[0], networks):
        chosen, matched = layer_pair(agg, network, methods, target)
        layers: list[str] = []
        for _, g in chosen:
            layers += [name for name in g.layer_remaining if name not in layers]
        width = 0.8 / max(len(chosen), 1)
        for i, (method, g) in enumerate(chosen):
            xs = [j + (i - (len(chosen) - 1) / 2) * width for j in range(len(layers))]
            ax.bar(xs, [100 * g.layer_remaining.get(name, float("nan")) for name in layers],
                   width=width, color=method_color(method),
                   label=f"{pretty_method(method)} ticket")
        if not layers:
            ax.text(0.5, 0.5, "no layer-wise data", ha="center", va="center",
                    transform=ax.transAxes, fontsize=LABEL_PT)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([_short_layer(n) for n in layers], rotation=60, ha="right",
                           rotation_mode="anchor")
        _style_axes(ax, "Layer", X_REMAINING)
        if len(layers) > 12:
            ax.tick_params(axis="x", labelsize=max(TICK_PT - 3, 9))
        ax.set_ylim(0, 105)
        title = panel_title(network, agg.dataset(network))
        if chosen:
            overall = " vs ".join(f"{pretty_method(m)} [{g.setting}] {100 * g.remaining_mean:.3g}%"
                                  for m, g in chosen)
            title += f"\n({overall} overall{'' if matched or len(chosen) < 2 else '; NOT matched: no closer pair'})"
        ax.set_title(title, fontsize=TITLE_PT)
    _shared_legend(fig, axes[0])
    _save(fig, out_dir, "layer_sparsity")
    return fig


#: How each CS hyperparameter is named on an axis (the knobs of methods/cs_sensitivity.py).
KNOB_LABELS = {"beta_final": "β_T (final temperature)", "lambda": "λ (mask penalty)",
               "weight_decay": "weight decay (search)"}


def _value_label(value: float) -> str:
    """50, 0.5, 1e-4, 1.5e-3: small values as powers of ten, the way the settings are usually written."""
    if value == 0 or abs(value) >= 0.01:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def sensitivity(agg: Aggregates, out_dir: Path | None = None) -> Figure | None:
    """CS's hyperparameter sensitivity: one column per hyperparameter; top row the ticket's remaining
    weights, bottom row its test accuracy after rewind retraining, vs the value (log scale; a value of 0 sits
    on a linear stretch at the left). One line per network, band: mean ± std over seeds, star: the default."""
    sweeps = {network: agg.sensitivity(network) for network in agg.networks()}
    knobs = sorted({knob for by_knob in sweeps.values() for knob in by_knob})
    if not knobs:
        return None
    fig, axes = _new_figure(len(knobs), n_rows=2)
    for column, knob in enumerate(knobs):
        top, bottom = axes[0][column], axes[1][column]
        for index, (network, by_knob) in enumerate((n, b) for n, b in sweeps.items() if knob in b):
            points = [p for p in by_knob[knob] if p.ticket is not None]
            if not points:
                continue
            color = _SPARE_COLORS[index % len(_SPARE_COLORS)]
            x = [p.value for p in points]
            for ax, mean, std in ((top, [100 * p.ticket.remaining_mean for p in points],
                                   [100 * p.ticket.remaining_std for p in points]),
                                  (bottom, [100 * p.ticket.test_acc_mean for p in points],
                                   [100 * p.ticket.test_acc_std for p in points])):
                ax.fill_between(x, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                                color=color, alpha=BAND_ALPHA, linewidth=0)
                ax.plot(x, mean, color=color, linewidth=LINEWIDTH, marker="o", markersize=6,
                        label=panel_title(network, agg.dataset(network)))
                ax.plot([p.value for p in points if p.is_default],
                        [m for m, p in zip(mean, points) if p.is_default], linestyle="none", marker="*",
                        markersize=16, color=color, markeredgecolor="black", label="default (main CS run)")
        values = sorted({p.value for by_knob in sweeps.values() for p in by_knob.get(knob, [])})
        positive = [v for v in values if v > 0]
        for ax in (top, bottom):
            if positive:
                ax.set_xscale("symlog", linthresh=min(positive))
            # a tick at each swept value (a log axis alone labels only the decades, e.g. none of 50..400)
            ax.set_xticks(values, [_value_label(v) for v in values])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
        _style_axes(top, "", "Remaining weights (%)")
        _style_axes(bottom, KNOB_LABELS.get(knob, knob), "Ticket test accuracy (%)")
        top.set_title(KNOB_LABELS.get(knob, knob), fontsize=TITLE_PT)
    _shared_legend(fig, [ax for row in axes for ax in row])
    _save(fig, out_dir, "sensitivity")
    return fig


#: name -> caption (without provenance); the report embeds these in this order.
def make_all(agg: Aggregates, out_dir: Path, show_optional: bool = False) -> dict[str, Figure]:
    """Draw and save every figure there is data for; returns name -> Figure."""
    figures = {
        "ticket_search": ticket_search(agg, out_dir, show_optional),
        "pruning": pruning(agg, out_dir, show_optional),
        "search_cost": search_cost(agg, out_dir, show_optional),
        "layer_sparsity": layer_sparsity(agg, out_dir),
        "sensitivity": sensitivity(agg, out_dir),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


__all__ = ["closest_group", "layer_pair", "layer_sparsity", "make_all",
           "pruning", "search_cost", "sensitivity", "ticket_search"]
