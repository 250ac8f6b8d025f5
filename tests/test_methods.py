"""CS, IMP and ticket retraining on real (small) Fashion-MNIST runs: the behaviour docs/method.md specifies."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cs_repro import run as ex
from cs_repro.data.prepared import load_prepared
from cs_repro.errors import UserError
from cs_repro.masks import HardMasks, SoftMasks
from cs_repro.methods.cs import clamp_between_rounds, run_cs_search, temperature_at
from cs_repro.methods.imp import global_magnitude_masks, remaining_after, run_imp
from cs_repro.methods.retrain import TicketRetrain, folded, retrain_ticket, run_retrain
from cs_repro.models import build_model, prunable_names
from cs_repro.run import TrainingRun
from cs_repro.tickets import load_ticket

CPU = torch.device("cpu")


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


# --- IMP --------------------------------------------------------------------------------------


def test_imp_levels_keep_exactly_the_scheduled_count(workspace, tiny_params):
    params = tiny_params()
    tickets = run_imp(params, "lenet300_100", 0, workspace / "imp", CPU, checkpoint_dir=None)
    total = tickets[0].metadata["prunable_count"]
    assert total == 784 * 300 + 300 * 100 + 100 * 10
    assert [t.metadata["remaining_count"] for t in tickets] == [round(0.8**level * total) for level in range(4)]
    # Pruned weights are never revived: each level's mask is inside the previous one.
    for previous, current in zip(tickets, tickets[1:]):
        for name in current.masks:
            assert not (current.masks[name] & ~previous.masks[name]).any()
    levels = _metrics(workspace / "imp")["levels"]
    assert [row["search_epochs"] for row in levels] == [3, 6, 9, 12]  # (l+1) * E


def test_global_magnitude_keeps_the_largest_weights_across_layers():
    generator = torch.Generator().manual_seed(3)
    weights = {"a": torch.randn(30, 20, generator=generator), "b": torch.randn(50, generator=generator) * 3}
    current = {"a": torch.rand(30, 20, generator=generator) > 0.3, "b": torch.ones(50, dtype=torch.bool)}
    kept_now = int(current["a"].sum() + current["b"].sum())
    keep = remaining_after(1, kept_now, 0.2)
    masks = global_magnitude_masks(weights, current, keep)
    assert int(masks["a"].sum() + masks["b"].sum()) == keep
    # Independently: the `keep` largest |w| among the currently kept weights, ranked together.
    candidates = torch.cat([weights["a"][current["a"]].abs(), weights["b"].abs()])
    threshold = candidates.sort(descending=True).values[keep - 1]
    for name in weights:
        assert torch.equal(masks[name], current[name] & (weights[name].abs() >= threshold))
        assert not (masks[name] & ~current[name]).any()


def test_remaining_after_follows_the_geometric_schedule():
    assert [remaining_after(level, 266_200, 0.2) for level in (0, 1, 14)] == [266_200, 212_960, round(0.8**14 * 266_200)]


# --- CS ---------------------------------------------------------------------------------------


def test_temperature_is_one_in_the_first_epoch_and_beta_final_in_the_last(workspace, tiny_params):
    params = tiny_params(epochs=4, lr_milestones=[3])
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "cs", CPU, checkpoint_dir=None)
    epochs = _metrics(workspace / "cs")["epochs"]
    for round_index in range(3):
        betas = [row["temperature"] for row in epochs if row["phase"] == round_index]
        assert betas[0] == 1.0
        assert betas[-1] == pytest.approx(200.0)
        ratios = [b / a for a, b in zip(betas, betas[1:])]
        assert ratios == pytest.approx([200.0 ** (1 / 3)] * 3)  # multiplied by beta_T^(1/(E-1)) each epoch
    assert temperature_at(0, 85, 200.0) == 1.0 and temperature_at(84, 85, 200.0) == pytest.approx(200.0)


def test_between_round_clamp_rules():
    model = torch.nn.Linear(3, 1, bias=False)
    masks = SoftMasks.attach(model, ["weight"], s0=0.0)
    logits = torch.tensor([[-0.01, 0.005, 0.3]])
    masks.load_state_dict({"weight": logits})
    clamp_between_rounds(masks, s0=0.0, beta_final=200.0, rule="paper")  # s <- min(beta_T * s, s0)
    assert torch.allclose(masks.state_dict()["weight"], torch.tensor([[-2.0, 0.0, 0.0]]))
    masks.load_state_dict({"weight": logits})
    clamp_between_rounds(masks, s0=0.1, beta_final=200.0, rule="released")  # s <- min(s, s0)
    assert torch.allclose(masks.state_dict()["weight"], torch.tensor([[-0.01, 0.005, 0.1]]))


def test_lower_s0_gives_sparser_tickets(workspace, tiny_params):
    params = tiny_params()
    remaining = []
    for s0 in (0.05, 0.0, -0.05):
        ticket = run_cs_search(params, "lenet300_100", s0, 0, workspace / f"cs{s0}", CPU, checkpoint_dir=None)
        remaining.append(ticket.metadata["remaining_weights"])
    assert remaining[0] > remaining[1] > remaining[2]
    assert remaining[0] > 0.5 and remaining[2] < 0.2


def test_ticket_file_holds_masks_rewind_state_and_metadata(workspace, tiny_params):
    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "cs", CPU, checkpoint_dir=None)
    ticket = load_ticket(workspace / "cs" / "ticket.pt")
    assert set(ticket.masks) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(mask.dtype == torch.bool for mask in ticket.masks.values())
    assert set(ticket.rewind_state) == set(build_model("lenet300_100", 10, 1, 28).state_dict())
    meta = ticket.metadata
    assert meta["method"] == "cs" and meta["seed"] == 0 and meta["s0"] == 0.0 and meta["search_epochs"] == 9
    assert meta["params"]["cs"]["lambda_"] == 1e-8
    kept = sum(int(m.sum()) for m in ticket.masks.values())
    assert meta["remaining_weights"] == pytest.approx(kept / meta["prunable_count"])
    assert set(meta["layer_remaining"]) == set(ticket.masks)


# --- retraining -------------------------------------------------------------------------------


def test_rewinding_restores_the_saved_state_including_batchnorm_statistics():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 32)
    names = prunable_names("resnet20", model)
    SoftMasks.attach(model, names, s0=0.0)  # the rewind point must come out mask-free
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    from cs_repro.masks import plain_state_dict

    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    rewind = plain_state_dict(model)
    assert rewind["bn1.running_mean"].abs().sum() > 0  # the statistics moved, so the test can fail
    binary = {name: torch.rand(rewind[name].shape) > 0.5 for name in names}

    fresh = build_model("resnet20", 10, 3, 32)
    TicketRetrain(binary, rewind).begin_phase(SimpleNamespace(model=fresh), 0)
    state = fresh.state_dict()
    for key, value in rewind.items():
        expected = value * binary[key] if key in binary else value
        assert torch.equal(state[key], expected), key


def test_masked_weights_stay_exactly_zero_through_retraining(workspace, tiny_params):
    params = tiny_params(weight_decay=1e-3)
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "cs", CPU, checkpoint_dir=None)
    ticket = load_ticket(workspace / "cs" / "ticket.pt")
    net = params.network("lenet300_100")
    model, _ = ex.make_model(net, 0, CPU)
    hooks = TicketRetrain(ticket.masks, ticket.rewind_state)
    data = ex.make_splits(net, load_prepared("fashion_mnist"), 0, CPU)
    loop = ex.TrainingLoop(model, data, hooks, epochs=net.epochs, optim=ex.optim_config(net), seed=0, device=CPU)
    loop.run()
    weights = dict(model.named_parameters())
    for name, mask in ticket.masks.items():
        assert torch.count_nonzero(weights[name][~mask]) == 0
        assert not torch.equal(weights[name][mask], ticket.rewind_state[name][mask])  # kept weights trained
    assert loop.history[-1].test_accuracy > 0.6


def test_warm_up_raises_the_lr_linearly_step_by_step_in_every_phase(workspace, tiny_params):
    """warmup_epochs=1 of 3, 20 steps an epoch, milestone at epoch 2: lr 0.05 x k/20 in the first epoch's step k
    (set before the step), then the schedule's 0.05 and 0.005; the next phase warms up again."""
    from cs_repro.train import Hooks, Phase

    net = tiny_params(warmup_epochs=1, batch_size=100).network("lenet300_100")
    seen: list[tuple[int, float]] = []

    class TwoPhases(Hooks):
        def phases(self, loop):
            return [Phase("a", loop.epochs), Phase("b", loop.epochs)]

        def after_step(self, loop, phase, step):
            seen.append((phase, loop.optimizers[0].param_groups[0]["lr"]))

    model, _ = ex.make_model(net, 0, CPU)
    data = ex.make_splits(net, load_prepared("fashion_mnist"), 0, CPU)
    ex.TrainingLoop(model, data, TwoPhases(), epochs=3, optim=ex.optim_config(net), seed=0, device=CPU,
                    require_learning=False).run()
    for phase in (0, 1):
        lrs = [lr for p, lr in seen if p == phase]
        assert len(lrs) == 60
        assert lrs[:20] == pytest.approx([0.05 * k / 20 for k in range(1, 21)])
        assert lrs[20:40] == pytest.approx([0.05] * 20) and lrs[40:] == pytest.approx([0.005] * 20)


def test_released_scale_retrains_cs_tickets_with_binary_over_sigmoid_s0(workspace, tiny_params):
    from cs_repro.evaluation import collect_rows

    params = tiny_params(lr=0.01)  # BN-free: at 0.05 the search (s0 0.5) or the released retraining diverges
    s0 = 0.5
    run_cs_search(params, "lenet300_100", s0, 0, workspace / "runs" / "cs", CPU, checkpoint_dir=None)
    ticket_path = workspace / "runs" / "cs" / "ticket.pt"
    for variant in ("rewind", "rewind_released_scale"):
        run_retrain(params, ticket_path, variant, workspace / "runs" / "cs" / variant, CPU, checkpoint_dir=None)
    plain, released = (_metrics(workspace / "runs" / "cs" / v) for v in ("rewind", "rewind_released_scale"))
    assert plain["mask_scale"] == 1.0  # the paper's plain binary mask (cs.mask_scale: binary)
    assert released["mask_scale"] == pytest.approx(1 + math.exp(-s0))  # = 1 / sigmoid(s0)
    assert plain["epochs"][0]["train_loss"] != released["epochs"][0]["train_loss"]
    # the folded definition: the rewound weights x 1/sigmoid(s0) once, then a plain mask
    run_retrain(params, ticket_path, "rewind_folded_scale", workspace / "runs" / "cs" / "folded", CPU, checkpoint_dir=None)
    fold = _metrics(workspace / "runs" / "cs" / "folded")
    assert fold["mask_scale"] == 1.0 and fold["weight_scale"] == pytest.approx(1 + math.exp(-s0))
    assert fold["epochs"][0]["train_loss"] not in (plain["epochs"][0]["train_loss"], released["epochs"][0]["train_loss"])
    # it starts from the function the released retraining starts from: c * m * W_k in every layer
    ticket = load_ticket(ticket_path)
    scale = 1 + math.exp(-s0)
    outputs = []
    for state, mask_scale in ((folded(ticket.rewind_state, ticket.masks, scale), 1.0), (ticket.rewind_state, scale)):
        model = TrainingRun(params, "lenet300_100", 0, CPU, None).model
        model.load_state_dict(state)
        HardMasks.apply(model, ticket.masks, scale=mask_scale)
        outputs.append(model(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert all(torch.equal(v, ticket.rewind_state[k]) for k, v in folded(ticket.rewind_state, ticket.masks, scale).items()
               if k not in ticket.masks)  # biases are not scaled
    rows, _, _ = collect_rows(params, workspace / "runs")
    found = {(r["method"], r["variant"]) for r in rows}
    assert {("cs", "pruned"), ("cs", "rewind"), ("cs_released_scale", "rewind"), ("cs_folded_scale", "rewind")} <= found

    run_imp(tiny_params({"imp": {"levels": 1}}), "lenet300_100", 0, workspace / "imp", CPU, checkpoint_dir=None)
    with pytest.raises(UserError, match="rewind_released_scale needs a CS ticket"):
        run_retrain(params, workspace / "imp" / "tickets" / "level_01.pt", "rewind_released_scale",
                       workspace / "x", CPU, checkpoint_dir=None)


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_identical_masks_and_metrics_and_another_seed_differs(workspace, tiny_params):
    params = tiny_params()
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_cs_search(params, "lenet300_100", 0.0, seed, workspace / folder, CPU, checkpoint_dir=None)
    a, b, c = (load_ticket(workspace / f / "ticket.pt") for f in "abc")
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert (workspace / "a" / "metrics.json").read_bytes() == (workspace / "b" / "metrics.json").read_bytes()
    assert not all(torch.equal(a.masks[n], c.masks[n]) for n in a.masks)
    assert _metrics(workspace / "a")["epochs"] != _metrics(workspace / "c")["epochs"]


def test_interrupted_search_resumes_to_identical_metrics(workspace, tiny_params, monkeypatch):
    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "whole", CPU, checkpoint_dir=workspace / "ck1")

    from cs_repro.methods.cs import CSSearch

    original = CSSearch.end_epoch
    calls = {"n": 0}

    def interrupt_after_five_epochs(self, loop, phase, epoch):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-round 2: optimiser state, clamped logits and rewind point must survive
            raise KeyboardInterrupt
        return original(self, loop, phase, epoch)

    monkeypatch.setattr(CSSearch, "end_epoch", interrupt_after_five_epochs)
    with pytest.raises(KeyboardInterrupt):
        run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "resumed", CPU, checkpoint_dir=workspace / "ck2")
    assert list((workspace / "ck2").glob("*.pt")), "a checkpoint must exist after the interruption"
    monkeypatch.setattr(CSSearch, "end_epoch", original)
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "resumed", CPU, checkpoint_dir=workspace / "ck2")
    assert (workspace / "whole" / "metrics.json").read_bytes() == (workspace / "resumed" / "metrics.json").read_bytes()
    whole, resumed = load_ticket(workspace / "whole" / "ticket.pt"), load_ticket(workspace / "resumed" / "ticket.pt")
    assert all(torch.equal(whole.masks[n], resumed.masks[n]) for n in whole.masks)
    assert not list((workspace / "ck2").glob("*.pt")), "the checkpoint is removed once the run's outputs exist"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model": "lenet9000"}, "unknown model 'lenet9000'"),
        ({"dataset": "imagenet21k"}, "unknown dataset 'imagenet21k'"),
        ({"epochs": -1}, "networks.lenet300_100.epochs=-1 must be >= 1"),
        ({"lr": "fast"}, "networks.lenet300_100.lr must be a number"),
        ({"processes": 3}, "networks.lenet300_100.batch_size=100 does not split evenly over "
                           "networks.lenet300_100.processes=3: choose a multiple of 3"),
        ({"warmup_epochs": 3}, "networks.lenet300_100.warmup_epochs=3 must be < networks.lenet300_100.epochs=3"),
        ({"image_size": 64}, "networks.lenet300_100.image_size applies to datasets streamed from disk (imagenet); "
                             "fashion_mnist images are 28 pixels: set it to 0"),
    ],
)
def test_bad_network_params_name_the_key(tiny_params, override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_params(**override)


def test_missing_prepared_data_says_how_to_make_it(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"dvc repro prepare@fashion_mnist"):
        run_cs_search(tiny_params(), "lenet300_100", 0.0, 0, tmp_path / "cs", CPU, checkpoint_dir=None)


def test_corrupted_ticket_is_a_clear_error(tmp_path):
    path = tmp_path / "ticket.pt"
    path.write_bytes(b"not a ticket")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        load_ticket(path)


def test_ticket_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "ticket.pt"
    torch.save({"format": "cs-repro-ticket/1", "masks": {}, "rewind_state": {}, "metadata": Payload()}, path)
    with pytest.raises(UserError, match="is refused: it refers to print, code or an object"):
        load_ticket(path)


def test_runs_write_their_own_rows_and_a_moved_runs_folder_evaluates_the_same(workspace, tiny_params):
    """Every run lists its result rows in its metrics.json (one constructor, tickets named relative to the
    run), so evaluation needs no per-method knowledge and a runs/ tree copied elsewhere gives the same rows."""
    import shutil

    from cs_repro.evaluation import collect_rows

    params = tiny_params({"imp": {"levels": 1}})
    runs = workspace / "runs" / "lenet300_100"
    run_cs_search(params, "lenet300_100", 0.0, 0, runs / "cs" / "search", CPU, checkpoint_dir=None)
    retrain_ticket(params, runs / "cs" / "search" / "ticket.pt", ("rewind", "reinit", "random"),
                      runs / "cs" / "retrain", CPU, checkpoint_dir=None)
    run_imp(params, "lenet300_100", 0, runs / "imp" / "search", CPU, checkpoint_dir=None)
    written = {tuple(r[k] for k in ("method", "variant", "setting")): r["ticket_file"]
               for folder in ("cs/search", "cs/retrain/rewind", "cs/retrain/random", "imp/search")
               for r in _metrics(runs / folder)["result_rows"]}
    assert written == {
        ("cs", "pruned", "s0=0"): "ticket.pt",
        ("cs", "rewind", "s0=0"): "../../search/ticket.pt",
        ("cs", "random", "s0=0"): "ticket.pt",  # the control's own random mask
        ("imp", "rewind", "level=0"): "tickets/level_00.pt",
        ("dense", "rewind", "dense"): "tickets/level_00.pt",
        ("imp", "rewind", "level=1"): "tickets/level_01.pt",
    }
    rows, _, _ = collect_rows(params, workspace / "runs")
    assert {(r["method"], r["variant"], r["track"]) for r in rows} == {
        ("cs", "pruned", "pruning"), ("cs", "rewind", "ticket"), ("cs", "reinit", "ticket"), ("cs", "random", "ticket"),
        ("imp", "rewind", "ticket"), ("dense", "rewind", "ticket")}
    by_key = {(r["method"], r["variant"], r["setting"]): r for r in rows}
    assert by_key[("cs", "rewind", "s0=0")]["test_accuracy"] == _metrics(runs / "cs" / "retrain" / "rewind")["final"]["test_accuracy"]
    assert by_key[("imp", "rewind", "level=1")]["params_nonzero"] < by_key[("dense", "rewind", "dense")]["params_nonzero"]

    moved = workspace / "elsewhere"
    shutil.copytree(workspace / "runs", moved)
    shutil.rmtree(workspace / "runs")
    again, _, _ = collect_rows(params, moved)

    def deterministic(table):  # wall-clock aside
        return [{k: v for k, v in r.items() if k != "search_seconds"} for r in table]

    assert deterministic(again) == deterministic(rows)
