"""Network slimming (methods/slimming.py): which channels the graph lets go, global pruning by |gamma| to a
target, the L1 term's gradient, and the two stages end to end on real data with a BatchNorm network."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from cs_repro.evaluation import collect_rows
from cs_repro.methods.slimming import (SlimmingTraining, channel_groups, prune_channels,
                                       run_slimming, run_slimming_train)
from cs_repro.models import build_model, prunable_names
from cs_repro.params import params_from_dict
from cs_repro.report.rows import as_rows
from cs_repro.tickets import load_ticket

from conftest import tiny_params_dict

CPU = torch.device("cpu")


def _groups(model_name: str, channels: int = 3, size: int = 32):
    torch.manual_seed(0)
    model = build_model(model_name, 10, channels, size)
    return model, channel_groups(model, prunable_names(model_name, model))


def test_channel_groups_keep_every_channel_that_enters_a_sum_or_the_classifier():
    _, resnet = _groups("resnet20")
    # each block's inner channels: conv1 -> bn1 -> relu -> conv2; bn2 and the stem feed residual sums
    assert [g.batchnorm for g in resnet] == [f"layer{s}.{b}.bn1" for s in (1, 2, 3) for b in range(3)]
    assert all(g.producer == g.batchnorm.replace("bn1", "conv1.weight") and
               g.consumers == (g.batchnorm.replace("bn1", "conv2.weight"),) for g in resnet)
    _, vgg = _groups("vgg16")
    # 13 convs: each BatchNorm feeds the next conv (through ReLU and max pools) but the last, which feeds
    # the classifier after a flatten
    assert len(vgg) == 12 and all(len(g.consumers) == 1 and g.consumers[0] != g.producer for g in vgg)
    assert _groups("lenet5", 1, 28)[1] == [] and _groups("lenet300_100", 1, 28)[1] == []


def test_channels_go_by_global_gamma_to_the_target_and_take_their_whole_filters_and_inputs():
    model, groups = _groups("resnet20")
    names = prunable_names("resnet20", model)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in names}
    generator = torch.Generator().manual_seed(1)
    scales = {g.batchnorm: torch.rand(dict(model.named_modules())[g.batchnorm].num_features, generator=generator) + 0.01
              for g in groups}
    masks, removed = prune_channels(weights, scales, groups, 0.4)
    total = sum(w.numel() for w in weights.values())
    kept = sum(int(m.sum()) for m in masks.values())
    widest_channel = max(w[0].numel() + w[:, 0].numel() for w in weights.values())
    assert 0 <= (total - kept) - (total - round(0.6 * total)) < widest_channel  # the target, within one channel
    # exactly the `removed` smallest |gamma| went, across layers
    everything = sorted((float(scales[g.batchnorm][c]), g.batchnorm, c) for g in groups for c in range(len(scales[g.batchnorm])))
    gone = {(bn, c) for _, bn, c in everything[:removed]}
    for g in groups:
        for c in range(len(scales[g.batchnorm])):
            producer, consumer = masks[g.producer][c], masks[g.consumers[0]][:, c]
            if (g.batchnorm, c) in gone:
                assert not producer.any() and not consumer.any()
            else:  # in ResNet-20 no conv is both a group's producer and another's consumer
                assert producer.all() and consumer.all()
    untouched = set(names) - {g.producer for g in groups} - {n for g in groups for n in g.consumers}
    assert untouched and all(masks[n].all() for n in untouched)  # the stem, the shortcut-feeding convs


def test_a_layer_keeps_one_channel_even_at_extreme_sparsity():
    model, groups = _groups("resnet20")
    names = prunable_names("resnet20", model)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in names}
    scales = {g.batchnorm: torch.full((dict(model.named_modules())[g.batchnorm].num_features,), 0.5) for g in groups}
    masks, _ = prune_channels(weights, scales, groups, 0.999)
    for g in groups:
        assert int(masks[g.producer].flatten(1).any(1).sum()) == 1


def test_the_l1_term_adds_penalty_times_sign_gamma_to_the_scales_gradient():
    model, groups = _groups("resnet20")
    model.eval()
    for g in groups:  # some negative scales, so the sign matters
        dict(model.named_modules())[g.batchnorm].weight.data.uniform_(-1.0, 1.0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    grads = {}
    for penalty in (0.0, 0.01):
        model.zero_grad()
        hooks = SlimmingTraining(groups, penalty)
        loop = SimpleNamespace(model=model)
        hooks.begin_phase(loop, 0)
        hooks.loss(loop, model(images), labels).backward()
        grads[penalty] = {g.batchnorm: dict(model.named_modules())[g.batchnorm].weight.grad.clone() for g in groups}
    for g in groups:
        scale = dict(model.named_modules())[g.batchnorm].weight.detach()
        torch.testing.assert_close(grads[0.01][g.batchnorm] - grads[0.0][g.batchnorm], 0.01 * scale.sign())
    assert F.cross_entropy(model(images), labels) > 0


def _resnet_params():
    """ResNet-20 (it has BatchNorm) on 256 real Fashion-MNIST images, 2 batches per epoch."""
    raw = tiny_params_dict(model="resnet20", train_subset=256, test_subset=200, val_size=100, batch_size=64,
                           epochs=2, lr_milestones=[1], max_batches=2)
    raw["networks"] = {"resnet20": raw["networks"]["lenet300_100"]}
    raw["sweep"]["networks"] = ["resnet20"]
    raw.update(baselines={"networks": ["resnet20"]}, slimming={"penalty": 1e-3, "networks": ["resnet20"]})
    return params_from_dict(raw)


def test_slimming_trains_prunes_and_fine_tunes_a_batchnorm_network_on_real_data(workspace):
    params = _resnet_params()
    runs = workspace / "runs" / "resnet20"
    assert run_slimming_train(params, "resnet20", 0, runs / "slimming" / "trained", CPU, checkpoint_dir=None)
    trained = json.loads((runs / "slimming" / "trained" / "metrics.json").read_text())
    assert all("mean_abs_gamma" in epoch for epoch in trained["epochs"])
    # the recorded settings leave out the fan-out list: slimming one more network changes no other run's config
    assert trained["config"]["slimming"] == {"penalty": 1e-3, "finetune_epochs": 0}
    ticket = run_slimming(params, "resnet20", 0.5, 0, runs / "slimming" / "trained", runs / "slimming" / "s",
                          CPU, checkpoint_dir=None)
    assert abs(ticket.metadata["remaining_weights"] - 0.5) < 0.05 and ticket.metadata["params"]["channels_removed"] > 0
    pruned = load_ticket(runs / "slimming" / "s" / "pruned.pt")
    assert all(torch.equal(pruned.masks[n], ticket.masks[n]) for n in ticket.masks)
    rows, _, _ = collect_rows(params, workspace / "runs")
    (row,) = [r for r in as_rows(rows) if r.method == "slimming"]
    assert (row.variant, row.track, row.setting) == ("finetuned", "pruning", "sparsity=0.5")
    assert row.remaining_weights == ticket.metadata["remaining_weights"] and row.flops_nonzero < row.flops_dense
    assert row.retrain_epochs == 2 and row.search_epochs == 2


def test_a_network_without_batchnorm_writes_skipped_markers(workspace, tiny_params):
    params = tiny_params()
    out = workspace / "runs" / "slimming"
    assert not run_slimming_train(params, "lenet300_100", 0, out / "trained", CPU, checkpoint_dir=None)
    assert "no BatchNorm" in json.loads((out / "trained" / "skipped.json").read_text())["skipped"]
    assert run_slimming(params, "lenet300_100", 0.5, 0, out / "trained", out / "s", CPU, checkpoint_dir=None) is None
    assert (out / "s" / "skipped.json").exists()
