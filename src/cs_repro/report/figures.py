"""Figures, drawn as reviewer 2 asked: only the main lines by default, thick lines, shaded bands
(mean ± std over seeds, ``fill_between``) instead of error bars, one heading per panel naming
network and dataset, large fonts, and ONE shared legend below the panels.

Every function returns the :class:`~matplotlib.figure.Figure` (or None when there is nothing to
draw) and, when ``out_dir`` is given, saves ``<name>.png`` and ``<name>.pdf`` there.  Figures are
built without pyplot, so nothing global is kept alive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from cs_repro.report.aggregate import CHAIN_METHODS, Aggregates, Group  # noqa: E402
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
#: IMP-C and the ablations, which would crowd the headline figure.
OPTIONAL_METHODS = frozenset({"imp_c", "cs_beta1", "cs_released_clamp", "gmp_cs_layers"})

_COLORS = {
    "cs": "#d62728",
    "imp": "#1f77b4",
    "imp_c": "#17becf",
    "l0": "#2ca02c",
    "gmp": "#9467bd",
    "magnitude_rewind": "#8c564b",
    "magnitude_finetune": "#e377c2",
}
_SPARE_COLORS = ("#ff7f0e", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#843c39")
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


def _shared_legend(fig: Figure, axes: list[Axes]) -> None:
    """ONE legend below the panels with each label once, in drawing order."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
                   fontsize=LEGEND_PT, frameon=False)


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
    fig.savefig(out_dir / f"{name}.pdf")


def _suptitle(fig: Figure, text: str) -> None:
    fig.suptitle(text, fontsize=TITLE_PT + 1)


# ---------------------------------------------------------------------------------------------
def _accuracy_panels(agg: Aggregates, track: str, include: Callable[[str, str], bool],
                     out_dir: Path | None, name: str) -> Figure | None:
    """Test accuracy vs remaining weights, one panel per network, for the (method, variant) pairs of
    `track` that `include` accepts; dense band, shared legend."""
    networks = [n for n in agg.networks() if agg.methods(n, track)]
    if not networks:
        return None
    fig, axes = _new_figure(len(networks))
    for ax, network in zip(axes[0], networks):
        _dense_band(ax, agg, network)
        for method in agg.methods(network, track):
            for variant in agg.variants(network, method, track):
                groups = agg.groups_for(network, method, variant, track) if include(method, variant) else []
                if groups:
                    _draw_groups(ax, groups, method, variant)
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


def pruning(agg: Aggregates, out_dir: Path | None = None) -> Figure | None:
    """Pruning track (no rewinding): accuracy of the pruned / fine-tuned networks."""
    return _accuracy_panels(agg, "pruning", lambda method, variant: True, out_dir, "pruning")


def _search_label(method: str, mode: str) -> str:
    name = pretty_method(method)
    if mode == "parallel":
        return f"{name}, parallel over settings (longest single run)"
    return name if method in CHAIN_METHODS else f"{name}, sequential"


def search_cost(agg: Aggregates, out_dir: Path | None = None,
                show_optional: bool = False) -> Figure | None:
    """Best ticket so far vs training epochs (top row) and wall-clock seconds (bottom row)."""
    networks = [n for n in agg.networks() if agg.methods(n, "ticket", "rewind")]
    if not networks:
        return None
    fig, axes = _new_figure(len(networks), n_rows=2)
    units = (("epochs", "Training epochs spent (epochs)"),
             ("seconds", "Wall-clock time spent (s)"))
    for row, (unit, xlabel) in enumerate(units):
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
            ax.set_title(panel_title(network, agg.dataset(network)), fontsize=TITLE_PT)
    _shared_legend(fig, axes[0] + axes[1])
    _save(fig, out_dir, "search_cost")
    return fig


def _short_layer(name: str) -> str:
    for suffix in (".weight", ".conv.weight"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.replace("layer", "L").replace("features", "f").replace("classifier", "fc")


def layer_target(agg: Aggregates, network: str) -> float | None:
    """Overall remaining weights at which layers are compared: CS's sparsest matching ticket,
    else the median CS group (by remaining weights), else the median group of the first main
    method present."""
    match = agg.sparsest_matching(network, "cs")
    if match is not None:
        return match.remaining_mean
    for method in ["cs"] + [m for m in agg.methods(network, "ticket", "rewind") if m != "cs"]:
        groups = sorted(agg.groups_for(network, method), key=lambda g: g.remaining_mean)
        if groups:
            return groups[len(groups) // 2].remaining_mean
    return None


def closest_group(groups: list[Group], target: float) -> Group | None:
    """Group whose mean remaining weights is closest to ``target`` (ties: the more accurate)."""
    if not groups:
        return None
    return min(groups, key=lambda g: (abs(g.remaining_mean - target), -g.test_acc_mean))


def layer_sparsity(agg: Aggregates, out_dir: Path | None = None, target: float | None = None,
                   methods: tuple[str, ...] = ("cs", "imp")) -> Figure | None:
    """Remaining weights per layer of each method's ticket closest to a common overall sparsity."""
    networks = [n for n in agg.networks()
                if any(agg.groups_for(n, m) for m in methods)]
    if not networks:
        return None
    fig, axes = _new_figure(len(networks))
    fig.set_figwidth(max(fig.get_figwidth(), 7.5 * len(networks)))
    for ax, network in zip(axes[0], networks):
        goal = target if target is not None else layer_target(agg, network)
        chosen = [(m, closest_group(agg.groups_for(network, m), goal)) for m in methods]
        chosen = [(m, g) for m, g in chosen if g is not None and g.layer_remaining]
        layers: list[str] = []
        for _, g in chosen:
            layers += [name for name in g.layer_remaining if name not in layers]
        width = 0.8 / max(len(chosen), 1)
        for i, (method, g) in enumerate(chosen):
            xs = [j + (i - (len(chosen) - 1) / 2) * width for j in range(len(layers))]
            ax.bar(xs, [100 * g.layer_remaining.get(name, float("nan")) for name in layers],
                   width=width, color=method_color(method),
                   label=f"{pretty_method(method)} ticket, {100 * g.remaining_mean:.3g}% "
                         f"remaining overall [{g.setting}]")
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
        if goal is not None:
            title += f"\n(target {100 * goal:.3g}% remaining)"
        ax.set_title(title, fontsize=TITLE_PT)
    _shared_legend(fig, axes[0])
    _save(fig, out_dir, "layer_sparsity")
    return fig


#: name -> caption (without provenance); the report embeds these in this order.
FIGURE_CAPTIONS = {
    "ticket_search": (
        "Ticket search: test accuracy of tickets retrained from the rewind point vs remaining "
        "weights (log scale, sparser to the right). Lines: mean over seeds; shaded bands: "
        "mean ± std over seeds; grey band: dense network (mean ± std)."
    ),
    "pruning": (
        "Pruning track (no rewinding): test accuracy of the pruned network at its own trained "
        "weights (solid) and fine-tuned (dashed) vs remaining weights; bands: mean ± std over seeds."
    ),
    "search_cost": (
        "Search cost: mean test accuracy of the best ticket found so far vs training epochs "
        "(top) and wall-clock seconds (bottom) spent, retraining included. Sequential: settings "
        "run one after another; parallel: all settings at once, so the cost is that of the "
        "longest single run."
    ),
    "layer_sparsity": (
        "Layer-wise remaining weights of the CS and IMP tickets closest to a common overall "
        "sparsity (target: CS's sparsest matching ticket, else the median CS ticket)."
    ),
}


def make_all(agg: Aggregates, out_dir: Path, show_optional: bool = False) -> dict[str, Figure]:
    """Draw and save every figure there is data for; returns name -> Figure."""
    figures = {
        "ticket_search": ticket_search(agg, out_dir, show_optional),
        "pruning": pruning(agg, out_dir),
        "search_cost": search_cost(agg, out_dir, show_optional),
        "layer_sparsity": layer_sparsity(agg, out_dir),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


__all__ = ["FIGURE_CAPTIONS", "closest_group", "layer_sparsity", "layer_target", "make_all",
           "pruning", "search_cost", "ticket_search"]
