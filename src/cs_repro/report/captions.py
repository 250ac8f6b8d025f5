"""The figures' names and captions, shared by the figure drawer and the Markdown writer.

Kept apart from figures.py so that writing the README's results block does not import matplotlib.
"""

FIGURE_CAPTIONS = {
    "ticket_search": (
        "Ticket search: test accuracy of tickets retrained from the rewind point vs remaining "
        "weights (log scale, sparser to the right). Lines: mean over seeds; shaded bands: "
        "mean ± std over seeds; grey band: dense network (mean ± std)."
    ),
    "pruning": (
        "Pruning track (no rewinding): test accuracy of the pruned network at its own trained "
        "weights (solid) and fine-tuned (dashed) vs remaining weights, for every method that ran on the "
        "network (the ablations are optional lines); bands: mean ± std over seeds."
    ),
    "search_cost": (
        "Search cost: mean test accuracy of the best ticket found so far vs training epochs "
        "(top row) and wall-clock seconds (bottom row) spent, retraining included. Sequential: settings "
        "run one after another; parallel: all settings at once, so the cost is that of the "
        "longest single run."
    ),
    "layer_sparsity": (
        "Layer-wise remaining weights of a CS and an IMP ticket at matched overall sparsity (within 5%, "
        "relative): the sparsest CS ticket that IMP has a ticket next to; each panel's title gives both "
        "overall values, and says so where no pair is matched."
    ),
    "sensitivity": (
        "CS's hyperparameter sensitivity: one hyperparameter changed at a time at one s0, the ticket's "
        "remaining weights (top) and its test accuracy after rewind retraining (bottom) vs the value "
        "(log scale, linear near 0); lines: mean over seeds, bands: mean ± std, stars: the profile's own "
        "value (the main CS run at that s0)."
    ),
}
