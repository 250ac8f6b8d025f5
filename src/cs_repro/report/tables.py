"""Tables in Markdown, CSV and LaTeX (a hand-written booktabs tabular; no pandas).

``ticket_search``: per network, the dense accuracy and, per method, the best ticket, the sparsest
matching ticket and the search cost to reach it ("—" where no ticket of the method matches).
``pruning``: the pruning track, every method at its settings, next to CS at the same sparsity.
``controls``: every ticket next to its reinit and random-mask controls.
``inference_cost``: parameters and FLOPs of the dense network and of each method's sparsest
matching ticket (nonzero).
``sensitivity``: CS's hyperparameter sweeps (when they ran), one row per value.

Markdown and LaTeX show rounded numbers (accuracy and remaining weights in %); the CSV keeps full
precision, in the same units, with empty cells where Markdown shows "—".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from cs_repro.methods.budgets import LAYER_BUDGETS
from cs_repro.report.aggregate import (
    MATCHED_SPARSITY_TOLERANCE,
    MATCHING_RULE,
    SENSITIVITY_DEFAULT_RULE,
    STD_RULE,
    Aggregates,
    Group,
    read_accuracy,
    setting_sort_key,
)
from cs_repro.report.rows import pretty_dataset, pretty_method, pretty_network

NONE_MATCH = "—"


@dataclass
class Table:
    name: str
    caption: str
    headers: list[str]
    cells: list[list[str]]  # display strings, one list per row
    csv_header: list[str]
    csv_rows: list[list[Any]] = field(default_factory=list)


# ---- number formatting (shared by Markdown and LaTeX) -------------------------------------------
def fmt_acc(mean: float, std: float | None = None, n: int | None = None) -> str:
    """Accuracy fraction -> "91.23 ± 0.45 (n = 3)" (percent, 2 decimals); a single seed has no spread,
    so it reads "91.23 (n = 1)", never "± 0.00"."""
    text = f"{100 * mean:.2f}"
    if n == 1:
        return f"{text} (n = 1)"
    if std is not None:
        text += f" ± {100 * std:.2f}"
    return text if n is None else f"{text} (n = {n})"


def fmt_group_acc(group: Group) -> str:
    return fmt_acc(group.test_acc_mean, group.test_acc_std, group.n_seeds)


def fmt_remaining(fraction: float) -> str:
    """Remaining weights fraction -> percent: 2 decimals from 1% up, 3 below."""
    pct = 100 * fraction
    return f"{pct:.2f}" if pct >= 1 else f"{pct:.3f}"


def fmt_epochs(epochs: float) -> str:
    return f"{epochs:.0f}" if abs(epochs - round(epochs)) < 1e-9 else f"{epochs:.1f}"


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def _csv_num(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"


def provenance(meta: Mapping[str, Any] | None) -> str:
    """One sentence naming profile, seeds, hardware, total compute and git commit."""
    if not meta:
        return ""
    seeds = meta.get("seeds", "not recorded")
    seeds_text = ", ".join(map(str, seeds)) if isinstance(seeds, (list, tuple)) else str(seeds)
    compute = meta.get("total_compute_seconds", "not recorded")
    if isinstance(compute, (int, float)) and not isinstance(compute, bool):
        compute_text = f"{compute:,.0f} s ({compute / 3600:.2f} h)"
    else:
        compute_text = str(compute)
    return (f"Profile {meta.get('profile', 'not recorded')}; seeds {seeds_text}; hardware "
            f"{meta.get('hardware', 'not recorded')}; total compute {compute_text}; git commit "
            f"{meta.get('git_commit', 'not recorded')}.")


# ---- the two tables --------------------------------------------------------------------------
def ticket_search_table(agg: Aggregates) -> Table:
    headers = ["Network", "Method", "Best ticket: test acc. (%)",
               "Best ticket: remaining weights (%)", "Best ticket: setting",
               "Sparsest matching: remaining weights (%)", "Sparsest matching: sparsity (%)",
               "Sparsest matching: test acc. (%)", "Sparsest matching: setting",
               "Search cost to reach it (epochs)", "Incl. retraining (epochs)"]
    csv_header = ["network", "dataset", "method", "best_setting", "best_test_acc_mean_pct",
                  "best_test_acc_std_pct", "best_remaining_pct", "best_n_seeds",
                  "sparsest_matching_setting", "sparsest_matching_remaining_pct",
                  "sparsest_matching_sparsity_pct", "sparsest_matching_test_acc_mean_pct",
                  "sparsest_matching_test_acc_std_pct", "sparsest_matching_n_seeds",
                  "search_epochs", "cost_epochs_incl_retraining"]
    cells: list[list[str]] = []
    rows: list[list[Any]] = []
    for network in agg.networks():
        title = f"{pretty_network(network)} ({pretty_dataset(agg.dataset(network))})"
        dense = agg.dense(network)
        if dense is not None:
            cells.append([title, "Dense", fmt_acc(dense.test_acc_mean, dense.test_acc_std, dense.n_seeds),
                          "100", "", "", "", "", "", "", ""])
            rows.append([network, dense.dataset, "dense", "", _csv_num(100 * dense.test_acc_mean),
                         _csv_num(100 * dense.test_acc_std), "100", dense.n_seeds,
                         "", "", "", "", "", "", "", ""])
        for method in agg.methods(network, "ticket", "rewind"):
            best = agg.best_ticket(network, method)
            match = agg.sparsest_matching(network, method)
            assert best is not None
            cell = [title, pretty_method(method), fmt_group_acc(best),
                    fmt_remaining(best.remaining_mean), best.setting]
            row = [network, best.dataset, method, best.setting,
                   _csv_num(100 * best.test_acc_mean), _csv_num(100 * best.test_acc_std),
                   _csv_num(100 * best.remaining_mean), best.n_seeds]
            if match is None:
                cell += [NONE_MATCH] * 6
                row += [""] * 8
            else:
                cell += [fmt_remaining(match.remaining_mean),
                         fmt_remaining(match.sparsity_mean),
                         fmt_group_acc(match), match.setting,
                         fmt_epochs(agg.search_cost(match)), fmt_epochs(agg.cost_to_reach(match))]
                row += [match.setting, _csv_num(100 * match.remaining_mean),
                        _csv_num(100 * match.sparsity_mean), _csv_num(100 * match.test_acc_mean),
                        _csv_num(100 * match.test_acc_std), match.n_seeds,
                        _csv_num(agg.search_cost(match)), _csv_num(agg.cost_to_reach(match))]
            cells.append(cell)
            rows.append(row)
    caption = (
        f"Ticket search (tickets retrained from the rewind point). Accuracies: {STD_RULE}; n = seeds. "
        f"Matching rule: {MATCHING_RULE} \"{NONE_MATCH}\": no ticket of the method matches "
        "(or there is no dense reference). Search cost to reach the sparsest matching ticket: "
        "mean recorded search epochs (for IMP these already include training the ticket); "
        "\"incl. retraining\" adds the retraining that measures the ticket's accuracy. "
        "For CS this is one s0 run, i.e. the wall-clock cost when the s0 sweep runs in parallel."
    )
    return Table("ticket_search", caption, headers, cells, csv_header, rows)


def inference_cost_table(agg: Aggregates, meta: Mapping[str, Any] | None = None) -> Table:
    headers = ["Network", "Model", "Remaining weights (%)", "Parameters (nonzero)",
               "Parameters vs dense", "FLOPs (nonzero)", "FLOPs vs dense"]
    csv_header = ["network", "dataset", "model", "setting", "remaining_pct", "params_nonzero",
                  "params_reduction", "flops_nonzero", "flops_reduction"]
    cells: list[list[str]] = []
    rows: list[list[Any]] = []
    for network in agg.networks():
        title = f"{pretty_network(network)} ({pretty_dataset(agg.dataset(network))})"
        dense = agg.dense(network)
        if dense is not None:
            cells.append([title, "Dense", "100", fmt_int(dense.params_total), "1×",
                          fmt_int(dense.flops_dense), "1×"])
            rows.append([network, dense.dataset, "dense", "", "100",
                         _csv_num(dense.params_total), "1", _csv_num(dense.flops_dense), "1"])
        for method in agg.methods(network, "ticket", "rewind"):
            match: Group | None = agg.sparsest_matching(network, method)
            name = f"{pretty_method(method)}: sparsest matching ticket"
            if match is None:
                cells.append([title, name] + [NONE_MATCH] * 5)
                rows.append([network, agg.dataset(network), method] + [""] * 6)
                continue
            p_red = (dense.params_total / match.params_nonzero
                     if dense is not None and match.params_nonzero else None)
            f_red = (dense.flops_dense / match.flops_nonzero
                     if dense is not None and match.flops_nonzero else None)
            cells.append([title, name, fmt_remaining(match.remaining_mean),
                          fmt_int(match.params_nonzero),
                          NONE_MATCH if p_red is None else f"{p_red:.1f}×",
                          fmt_int(match.flops_nonzero),
                          NONE_MATCH if f_red is None else f"{f_red:.1f}×"])
            rows.append([network, match.dataset, method, match.setting,
                         _csv_num(100 * match.remaining_mean), _csv_num(match.params_nonzero),
                         _csv_num(p_red), _csv_num(match.flops_nonzero), _csv_num(f_red)])
    convention = (meta or {}).get("flops_convention", "not recorded")
    caption = (
        "Inference cost of the dense network and of each method's sparsest matching ticket: "
        "whole-network parameters and FLOPs counting only nonzero weights (means over seeds), "
        f"and the reduction relative to the dense network. FLOP convention: {convention}. "
        f"Matching rule: {MATCHING_RULE} \"{NONE_MATCH}\": no ticket of the method matches."
    )
    return Table("inference_cost", caption, headers, cells, csv_header, rows)


def sensitivity_table(agg: Aggregates) -> Table | None:
    """CS's sensitivity sweep: per network, hyperparameter and value, the ticket's remaining weights and its
    test accuracy after rewind retraining, the pruned network's accuracy, and the epochs one run costs."""
    headers = ["Network", "Hyperparameter", "Value", "Remaining weights (%)", "Ticket: test acc. (%)",
               "Pruned: test acc. (%)", "Epochs per run"]
    csv_header = ["network", "dataset", "hyperparameter", "value", "is_default", "remaining_mean_pct",
                  "remaining_std_pct", "ticket_test_acc_mean_pct", "ticket_test_acc_std_pct", "pruned_test_acc_mean_pct",
                  "n_seeds", "epochs_per_run"]
    cells: list[list[str]] = []
    rows: list[list[Any]] = []
    for network in agg.networks():
        title = f"{pretty_network(network)} ({pretty_dataset(agg.dataset(network))})"
        for knob, points in agg.sensitivity(network).items():
            for point in points:
                ticket, pruned = point.ticket, point.pruned
                value = f"{point.value:g}" + (" (default)" if point.is_default else "")
                epochs = None if ticket is None else ticket.search_epochs + ticket.retrain_epochs
                remaining = NONE_MATCH if ticket is None else (
                    f"{fmt_remaining(ticket.remaining_mean)} ± {fmt_remaining(ticket.remaining_std)}")
                cells.append([title, knob, value, remaining,
                              NONE_MATCH if ticket is None else fmt_group_acc(ticket),
                              NONE_MATCH if pruned is None else fmt_group_acc(pruned),
                              NONE_MATCH if epochs is None else fmt_epochs(epochs)])
                rows.append([network, agg.dataset(network), knob, _csv_num(point.value), int(point.is_default),
                             "" if ticket is None else _csv_num(100 * ticket.remaining_mean),
                             "" if ticket is None else _csv_num(100 * ticket.remaining_std),
                             "" if ticket is None else _csv_num(100 * ticket.test_acc_mean),
                             "" if ticket is None else _csv_num(100 * ticket.test_acc_std),
                             "" if pruned is None else _csv_num(100 * pruned.test_acc_mean),
                             "" if ticket is None else ticket.n_seeds, _csv_num(epochs)])
    if not cells:
        return None
    caption = (
        "CS's hyperparameter sensitivity: one hyperparameter changed at a time, one CS search per value and "
        f"seed at one s0, its ticket retrained from the rewind point with the profile's own settings; "
        f"{SENSITIVITY_DEFAULT_RULE}. Remaining weights and accuracies: {STD_RULE}. Epochs per run: the "
        "search's plus the retraining's; a sweep costs that once per value and seed."
    )
    return Table("sensitivity", caption, headers, cells, csv_header, rows)


# ---- renderers -------------------------------------------------------------------------------
#: The controls a ticket is compared with, in column order: the same mask from fresh weights, and a
#: random mask with the ticket's layer-wise counts from the same rewind point.
CONTROL_VARIANTS = ("reinit", "random")


#: A CS ticket retrained under another definition (methods/retrain.py: the released code's mask scale, the scale
#: folded into the rewound weights) is reported as a method of its own, "<method><suffix>"; the controls table sets
#: each next to the ticket: variant -> (results-method suffix, column).
TICKET_DEFINITIONS = {"rewind_binary_mask": ("_binary_mask", "Binary mask (%)"),
                      "rewind_released_scale": ("_released_scale", "Released mask scale (%)"),
                      "rewind_folded_scale": ("_folded_scale", "Folded mask scale (%)")}


def controls_table(agg: Aggregates, diverged: Sequence[Mapping[str, Any]] = ()) -> Table | None:
    """Every ticket that has a control next to it: its accuracy against the controls' (None: no controls).
    ``diverged``: the controls that diverged (results.json's meta.diverged_controls), shown in their cells."""
    columns = (*CONTROL_VARIANTS, *TICKET_DEFINITIONS)
    headers = ["Network", "Method", "Setting", "Remaining weights (%)", "Ticket: test acc. (%)",
               "Reinit control (%)", "Random-mask control (%)", *(column for _, column in TICKET_DEFINITIONS.values())]
    csv_header = ["network", "dataset", "method", "setting", "remaining_pct", "ticket_test_acc_mean_pct",
                  "ticket_test_acc_std_pct", "ticket_n_seeds"]
    for variant in columns:
        csv_header += [f"{variant}_test_acc_mean_pct", f"{variant}_test_acc_std_pct", f"{variant}_n_seeds"]
    csv_header.append("diverged")
    cells: list[list[str]] = []
    rows: list[list[Any]] = []
    for network in agg.networks():
        title = f"{pretty_network(network)} ({pretty_dataset(agg.dataset(network))})"
        for method in agg.methods(network, "ticket", "rewind"):
            if method.endswith(tuple(suffix for suffix, _ in TICKET_DEFINITIONS.values())):
                continue  # shown in its ticket's row
            controls = {variant: {g.setting: g for g in agg.groups_for(network, method, variant)}
                        for variant in CONTROL_VARIANTS}
            for variant, (suffix, _) in TICKET_DEFINITIONS.items():
                controls[variant] = {g.setting: g for g in agg.groups_for(network, method + suffix)}
            for ticket in agg.groups_for(network, method, "rewind"):
                found = {variant: controls[variant].get(ticket.setting) for variant in columns}
                failed = {variant: sorted((d["seed"], d["epoch"]) for d in diverged
                                          if (d.get("network"), d.get("method"), d.get("setting"), d.get("variant"))
                                          == (network, method, ticket.setting, variant)) for variant in columns}
                if not any(found.values()) and not any(failed.values()):
                    continue
                cell = [title, pretty_method(method), ticket.setting, fmt_remaining(ticket.remaining_mean),
                        fmt_group_acc(ticket)]
                row = [network, ticket.dataset, method, ticket.setting, _csv_num(100 * ticket.remaining_mean),
                       _csv_num(100 * ticket.test_acc_mean), _csv_num(100 * ticket.test_acc_std), ticket.n_seeds]
                for variant in columns:
                    group = found[variant]
                    note = "; ".join(f"diverged at epoch {epoch} (seed {seed})" for seed, epoch in failed[variant])
                    if group is None:
                        cell.append(note)
                        row += ["", "", ""]
                    else:
                        cell.append(fmt_group_acc(group) + (f"; {note}" if note else ""))
                        row += [_csv_num(100 * group.test_acc_mean), _csv_num(100 * group.test_acc_std),
                                group.n_seeds]
                row.append("; ".join(f"{variant} seed {seed} epoch {epoch}" for variant in columns
                                     for seed, epoch in failed[variant]))
                cells.append(cell)
                rows.append(row)
    if not cells:
        return None
    caption = (
        "Tickets next to their controls, at the ticket's own mask and setting: the ticket retrained from "
        "the rewind point; the same mask retrained from fresh random weights (reinit); a random mask with "
        "exactly the ticket's layer-wise counts retrained from the same rewind point (random); CS only, the other "
        "definitions of a ticket: the binary mask times the rewound weights (the paper's text), the mask times "
        "1/sigmoid(s0) in every forward pass (the released code), the rewound weights times 1/sigmoid(s0) once, then "
        "a plain mask (folded); the ticket column is the profile's own definition (cs.mask_scale), named in the "
        "report's scope. "
        f"Accuracies: {STD_RULE}; n = seeds. A control that diverged is a result, not a failure: its cell says at "
        "which epoch, on which seed, and its accuracy is left out of the mean. An empty cell: that control was not "
        "run for this setting."
    )
    return Table("controls", caption, headers, cells, csv_header, rows)


#: The pruning track's variants, in column order: the network at its own trained weights, then fine-tuned.
PRUNING_VARIANTS = ("pruned", "finetuned")


def pruning_table(agg: Aggregates) -> Table | None:
    """The pruning track (no rewinding) with the prominence of the ticket search: every method at its own
    settings, pruned and fine-tuned, next to CS's accuracy at the same remaining weights."""
    headers = ["Network", "Method", "Setting", "Remaining weights (%)", "Pruned: test acc. (%)",
               "Fine-tuned: test acc. (%)", "CS at the same remaining weights (%)"]
    csv_header = ["network", "dataset", "method", "setting", "remaining_pct"]
    for variant in PRUNING_VARIANTS:
        csv_header += [f"{variant}_test_acc_mean_pct", f"{variant}_test_acc_std_pct", f"{variant}_n_seeds"]
    csv_header += ["cs_same_remaining_test_acc_pct", "cs_same_remaining_interpolated"]
    cells: list[list[str]] = []
    rows: list[list[Any]] = []
    for network in agg.networks():
        title = f"{pretty_network(network)} ({pretty_dataset(agg.dataset(network))})"
        cs_points = agg.pruning_points(network, "cs")
        for method in agg.methods(network, "pruning"):
            by_setting: dict[str, dict[str, Group]] = {}
            for variant in PRUNING_VARIANTS:
                for group in agg.groups_for(network, method, variant, "pruning"):
                    by_setting.setdefault(group.setting, {})[variant] = group
            for setting, found in sorted(by_setting.items(), key=lambda item: setting_sort_key(item[0])):
                remaining = next(iter(found.values())).remaining_mean
                cell = [title, pretty_method(method), setting, fmt_remaining(remaining)]
                row = [network, agg.dataset(network), method, setting, _csv_num(100 * remaining)]
                for variant in PRUNING_VARIANTS:
                    group = found.get(variant)
                    cell.append("" if group is None else fmt_group_acc(group))
                    row += ["", "", ""] if group is None else [
                        _csv_num(100 * group.test_acc_mean), _csv_num(100 * group.test_acc_std), group.n_seeds]
                reading = None if method == "cs" or not cs_points else read_accuracy(cs_points, remaining)
                if reading is None:
                    cell.append("")
                    row += ["", ""]
                else:
                    text = f"{100 * reading.accuracy:.2f}"
                    cell.append(f"≈{text} (interpolated)" if reading.interpolated else text)
                    row += [_csv_num(100 * reading.accuracy), int(reading.interpolated)]
                cells.append(cell)
                rows.append(row)
    if not cells:
        return None
    caption = (
        "Pruning track (no rewinding): each method's network at its own trained weights (pruned) and after "
        "fine-tuning, at the method's own settings. The last column is CS's pruned accuracy (best of its "
        "variants) at the same remaining weights: a CS network within "
        f"{MATCHED_SPARSITY_TOLERANCE:.0%} (relative) of that sparsity where there is one, otherwise "
        "interpolated in log(remaining weights) between CS's two nearest networks and marked \"≈ … "
        f"(interpolated)\"; empty outside CS's range. Accuracies: {STD_RULE}; n = seeds."
    )
    return Table("pruning", caption, headers, cells, csv_header, rows)


#: The methods that run under several layer budgets, and which of their results the budgets are compared on.
BUDGETED_METHODS = (("gmp", "pruning", "pruned"), ("magnitude_finetune", "pruning", "finetuned"),
                    ("magnitude_rewind", "ticket", "rewind"))
#: GMP at a CS ticket's overall sparsity (setting "cs s0=..."), and GMP given that ticket's per-layer budget.
CS_BUDGET_METHOD = "gmp_cs_layers"


def layer_budgets_table(agg: Aggregates) -> Table | None:
    """The layer budgets side by side (reviewer 1): for GMP and one-shot magnitude pruning, at each target
    sparsity, the accuracy with one global ranking, a uniform and an ERK budget; and GMP at a CS ticket's
    sparsity, global vs. that ticket's own per-layer budget. Only where a budget other than global ran."""
    budgets = LAYER_BUDGETS
    headers = ["Network", "Method", "Setting", "Remaining weights (%)", "Global (%)",
               *(f"{label[0].upper()}{label[1:]} (%)" for label in budgets.values()), "A CS ticket's layers (%)"]
    csv_header = ["network", "dataset", "method", "setting", "remaining_pct"]
    for budget in ("global", *budgets, "cs_ticket"):
        csv_header += [f"{budget}_test_acc_mean_pct", f"{budget}_test_acc_std_pct", f"{budget}_n_seeds"]
    cells: list[list[str]] = []
    rows: list[list[Any]] = []

    def add(network: str, method: str, setting: str, found: list[Group | None]) -> None:
        remaining = next(g for g in found if g is not None).remaining_mean
        cells.append([f"{pretty_network(network)} ({pretty_dataset(agg.dataset(network))})", pretty_method(method),
                      setting, fmt_remaining(remaining)] + ["" if g is None else fmt_group_acc(g) for g in found])
        row = [network, agg.dataset(network), method, setting, _csv_num(100 * remaining)]
        for g in found:
            row += ["", "", ""] if g is None else [_csv_num(100 * g.test_acc_mean), _csv_num(100 * g.test_acc_std),
                                                   g.n_seeds]
        rows.append(row)

    for network in agg.networks():
        for method, track, variant in BUDGETED_METHODS:
            per_budget = {budget: {g.setting: g for g in agg.groups_for(network, f"{method}_{budget}", variant, track)}
                          for budget in budgets}
            if not any(per_budget.values()):
                continue
            for base in agg.groups_for(network, method, variant, track):
                if base.setting.startswith("sparsity="):
                    add(network, method, base.setting,
                        [base, *(per_budget[b].get(base.setting) for b in budgets), None])
        gmp_at_cs = {g.setting: g for g in agg.groups_for(network, "gmp", "pruned", "pruning")}
        for cs_layers in agg.groups_for(network, CS_BUDGET_METHOD, "pruned", "pruning"):
            add(network, "gmp", cs_layers.setting, [gmp_at_cs.get(cs_layers.setting), *(None for _ in budgets),
                                                    cs_layers])
    if not any(any(cell[5:5 + len(budgets)]) for cell in cells):
        return None  # global (and a CS ticket's) only: the pruning table says it all
    caption = (
        "Layer budgets side by side: GMP (pruned network), one-shot magnitude pruning with fine-tuning, and "
        "its ticket retrained from the rewind point, each at the same overall sparsity with one global "
        "magnitude ranking, a uniform budget (every layer keeps the same fraction) and an ERK budget (Evci et "
        "al. 2020); and GMP at a CS ticket's overall sparsity with a global ranking vs. that ticket's own "
        f"per-layer counts. Test accuracies: {STD_RULE}; n = seeds."
    )
    return Table("layer_budgets", caption, headers, cells, csv_header, rows)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table, with_caption: bool = True) -> str:
    lines = []
    if with_caption:
        lines += [f"**Table ({table.name}).** {table.caption}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(table.headers)))
                 + "|")
    for row in table.cells:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "≈": r"$\approx$", "—": "---", "×": r"$\times$", "≥": r"$\geq$", "−": "$-$",
                  "·": r"$\cdot$", "σ": r"$\sigma$", "β": r"$\beta$"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for uni, tex in _LATEX_UNICODE.items():
        out = out.replace(uni, tex)
    return out


def to_latex(table: Table) -> str:
    spec = "ll" + "r" * (len(table.headers) - 2)
    lines = [
        "% Generated by cs_repro.report.tables; needs \\usepackage{booktabs,graphicx}.",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(table.caption)}}}",
        f"\\label{{tab:{table.name}}}",
        "\\resizebox{\\linewidth}{!}{%",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + " \\\\",
        "\\midrule",
    ]
    previous = None
    for row in table.cells:
        if previous is not None and row[0] != previous:
            lines.append("\\midrule")
        previous = row[0]
        lines.append(" & ".join(latex_escape(c) for c in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex, cs = (out_dir / f"{table.name}.{ext}" for ext in ("md", "tex", "csv"))
    md.write_text(to_markdown(table))
    tex.write_text(to_latex(table))
    with cs.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.csv_header)
        writer.writerows(table.csv_rows)
    return [md, cs, tex]


def make_tables(agg: Aggregates, meta: Mapping[str, Any] | None = None) -> list[Table]:
    """Every table with data; with `meta`, each caption ends with the run's provenance."""
    tables = [ticket_search_table(agg), pruning_table(agg), layer_budgets_table(agg), inference_cost_table(agg, meta),
              controls_table(agg, (meta or {}).get("diverged_controls") or ()), sensitivity_table(agg)]
    stamp = f" {provenance(meta)}" if meta else ""
    return [replace(table, caption=table.caption + stamp) for table in tables if table is not None]


def write_tables(agg: Aggregates, out_dir: Path,
                 meta: Mapping[str, Any] | None = None) -> list[Path]:
    """Write every table as .md, .csv and .tex into ``out_dir`` (e.g. ``figures/tables``)."""
    paths: list[Path] = []
    for table in make_tables(agg, meta):
        paths += write_table(table, out_dir)
    return paths
