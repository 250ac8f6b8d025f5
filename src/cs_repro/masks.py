"""Masks on the prunable weights of any `nn.Module`.

Two kinds:

* **Soft (CS) masks.** Each prunable weight W gets mask logits s of the same shape, and the network
  sees ``W * sigmoid(beta * s) / sigmoid(s0)`` through `torch.nn.utils.parametrize`. Dividing by
  sigmoid(s0) makes the mask start at exactly 1, as in the authors' released code. The mask
  penalty is ``sum over tensors of sum(sigmoid(beta * s)) / sigmoid(s0)`` (a plain sum).
* **Hard masks.** A fixed 0/1 mask: masked weights are set to 0 and their gradients are multiplied
  by the mask, so with momentum and weight decay they stay exactly 0 (both terms are 0 for a weight
  that is 0 and gets no gradient). The forward pass is the dense one: no overhead but one multiply
  per gradient. A scale c (the released code's ticket retraining, effective weight c * m * W with W
  trained) is the same trajectory as storing c * m * W and scaling its gradient by c**2 (`HardMasks`).

On the CPU in float32 the soft mask runs as one fused C++ op (`cs_repro.kernels`: one pass forward,
one backward, penalty gradient folded in, autograd formula in C++). Elsewhere (GPU, float64, or where
the kernel cannot be built) it is `_SoftMaskedWeight`, an autograd function of ATen ops that computes
sigmoid once and reuses it in the backward pass and, with `fuse_penalty`, adds the penalty's
gradient there too. `benchmarks/mask_overhead.py` measures the step time against the dense network.
`torch.nn.utils.parametrize` itself costs ~6 us per masked tensor per step on a CPU (measured), so
it stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize

from cs_repro.errors import UserError
from cs_repro.kernels import fused_soft_mask_available


class _SoftMaskedWeight(torch.autograd.Function):
    """out = W * sigmoid(beta*s) * scale; backward adds lambda_ * d(scale*sigmoid(beta*s))/ds.

    Written for few passes over the weight-sized tensors and few dispatched ops (on a GPU each op is a
    kernel launch, and launches bound the step there):

    * forward: g = sigmoid(beta*s), out = scale*W*g in one `addcmul` on a zero held by the mask (no
      scalar allocated per step). On the CPU g = 1/(1+exp(-beta*s)) in four cheap in-place passes
      instead (ATen's CPU sigmoid kernel is ~5x slower than exp and runs on one thread);
    * backward: grad_W = scale*grad*g in one `addcmul`; grad_s = sigmoid_backward(bs*grad*W + lam*bs, g)
      with bs = beta*scale, i.e. one `addcmul` and one fused `sigmoid_backward` (on a GPU, where beta
      stays a tensor, two more multiplications by beta and scale). The unused gate output gets no
      materialised zero gradient.

    On the CPU beta is read as a Python number (cheap there, and it lets the constants ride along in
    the fused ops); elsewhere it stays a tensor so that no step waits on the device.

    Written in the forward/setup_context form so that torch.func transforms accept it; the gate is a
    second, non-differentiable output because that form can save only inputs and outputs.
    """

    @staticmethod
    def forward(weight: Tensor, logits: Tensor, beta: Tensor, scale: float, lambda_: float, zero: Tensor,
                lambda_tensor: Tensor):
        b = _beta_number(beta)
        if b is not None:
            gate = torch.mul(logits, -b)
            gate.exp_().add_(1.0).reciprocal_()  # sigmoid(beta*s), in place
        else:
            gate = torch.sigmoid(torch.mul(logits, beta))
        return torch.addcmul(zero, weight, gate, value=scale), gate

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weight, _, beta, scale, lambda_, zero, lambda_tensor = inputs
        _, gate = output
        ctx.mark_non_differentiable(gate)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(weight, gate, beta, zero, lambda_tensor)
        ctx.beta = _beta_number(beta)
        ctx.scale = scale
        ctx.lambda_ = lambda_

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor | None, _grad_gate: Tensor | None):
        if grad_out is None:  # the masked weight was not used
            return None, None, None, None, None, None, None
        weight, gate, beta, zero, lambda_tensor = ctx.saved_tensors
        scale = ctx.scale
        grad_weight = grad_logits = None
        if ctx.needs_input_grad[0]:
            grad_weight = torch.addcmul(zero, grad_out, gate, value=scale)
        if ctx.needs_input_grad[1]:
            # d/ds [scale*sigmoid(beta*s)] = scale*beta*g*(1-g); the penalty (lambda * sum(scale*g))
            # adds lambda to the upstream term grad*W.
            if ctx.beta is not None:
                bs = ctx.beta * scale
                upstream = torch.addcmul(grad_out.new_full((), ctx.lambda_ * bs), grad_out, weight, value=bs)
            else:
                upstream = torch.addcmul(lambda_tensor, grad_out, weight)
            grad_logits = torch.ops.aten.sigmoid_backward.grad_input(upstream, gate, grad_input=upstream)
            if ctx.beta is None:
                grad_logits.mul_(beta).mul_(scale)
        return grad_weight, grad_logits, None, None, None, None, None


def aten_soft_masked_weight(weight: Tensor, logits: Tensor, beta: Tensor, scale: float, lambda_: float,
                            zero: Tensor | None = None, lambda_tensor: Tensor | None = None) -> Tensor:
    """W * sigmoid(beta*s) * scale through `_SoftMaskedWeight` (the path off the fused CPU kernel). `zero`
    and `lambda_tensor` (0 and lambda as 0-d tensors of the weight's dtype and device) are the mask's own
    where it has them, so that a step allocates no scalars."""
    if zero is None:
        zero = weight.new_zeros(())
    if lambda_tensor is None:
        lambda_tensor = weight.new_full((), lambda_)
    return _SoftMaskedWeight.apply(weight, logits, beta, scale, lambda_, zero, lambda_tensor)[0]


def _fused_kernel_applies(weight: Tensor) -> bool:
    """The fused C++ op serves plain eager training on the CPU in float32. Its autograd formula lives in
    C++, which torch.func transforms and torch.compile cannot see through, so under those the ATen
    path runs instead (same values up to float32 rounding)."""
    return (
        weight.is_cpu
        and weight.dtype == torch.float32
        and not torch.compiler.is_compiling()
        and torch._C._functorch.peek_interpreter_stack() is None  # not inside torch.func.grad/vmap/...
        and fused_soft_mask_available()
    )


def _beta_number(beta: Tensor) -> float | None:
    """beta as a Python number where reading it is free (CPU); None elsewhere (a read would sync)."""
    return float(beta) if beta.device.type == "cpu" else None


class SoftMask(nn.Module):
    """A parametrization holding the mask logits of one weight tensor."""

    def __init__(self, weight: Tensor, s0: float) -> None:
        super().__init__()
        # The weight's own layout (channels_last on CUDA): logits in another layout would cost a copy per op.
        self.logits = nn.Parameter(torch.full_like(weight, float(s0), memory_format=torch.preserve_format))
        # beta is a tensor so that changing it never retraces or rebuilds anything.
        self.register_buffer("beta", weight.new_ones(()))
        # 0 and lambda as tensors the ATen path reuses every step (not saved: derived)
        self.register_buffer("zero", weight.new_zeros(()), persistent=False)
        self.register_buffer("lambda_tensor", weight.new_zeros(()), persistent=False)
        self.s0 = float(s0)
        self.scale = 1.0 / _sigmoid(s0)
        self.lambda_ = 0.0
        self._beta_value: float | None = None  # float(beta), read once per change instead of once per step

    def set_beta(self, beta: float) -> None:
        self.beta.fill_(beta)
        self._beta_value = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # a checkpoint may bring another beta
        self._beta_value = None
        super()._load_from_state_dict(*args, **kwargs)

    def beta_value(self) -> float:
        """beta as a Python number (the float32 value the buffer holds); reads the buffer only after a change."""
        if self._beta_value is None:
            self._beta_value = float(self.beta)
        return self._beta_value

    def set_lambda(self, lambda_: float) -> None:
        self.lambda_ = float(lambda_)
        self.lambda_tensor.fill_(self.lambda_)

    def forward(self, weight: Tensor) -> Tensor:
        if _fused_kernel_applies(weight):
            return torch.ops.cs_repro.soft_masked_weight(
                weight, self.logits, self.beta_value(), self.scale, self.lambda_
            )
        return aten_soft_masked_weight(weight, self.logits, self.beta, self.scale, self.lambda_, self.zero,
                                       self.lambda_tensor)

    def gate(self) -> Tensor:
        """The soft mask sigmoid(beta*s)/sigmoid(s0), differentiable."""
        return torch.sigmoid(self.logits * self.beta) * self.scale


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def default_prunable_names(model: nn.Module) -> list[str]:
    """For a model outside our registry: the weight of every Conv2d and Linear."""
    return [
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ]


def _split_name(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, tensor_name = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise UserError(f"prunable tensor {name!r} does not exist in {type(model).__name__}") from None
    if not isinstance(getattr(module, tensor_name, None), Tensor):
        raise UserError(f"prunable tensor {name!r} does not exist in {type(model).__name__}")
    return module, tensor_name


def attach_parametrizations(model: nn.Module, names: list[str] | None, make_part, what: str) -> tuple[list[str], dict]:
    """Register `make_part(weight)` as the parametrization of each named tensor (default: every Conv/Linear
    weight). Shared by CS soft masks and L0 gates; `what` names the thing in error messages."""
    names = list(names) if names is not None else default_prunable_names(model)
    if not names:
        raise UserError(f"no prunable tensors given: name at least one weight to {what}")
    parts = {}
    for name in names:
        module, tensor_name = _split_name(model, name)
        if parametrize.is_parametrized(module, tensor_name):
            raise UserError(f"{name!r} already carries a mask; detach it first")
        part = make_part(getattr(module, tensor_name))
        parametrize.register_parametrization(module, tensor_name, part, unsafe=True)
        parts[name] = part
    return names, parts


class SoftMasks:
    """CS soft masks attached to a model's prunable weights.

    >>> masks = SoftMasks.attach(model, ["fc1.weight"], s0=0.0)
    >>> masks.set_temperature(10.0); loss = ce + lam * masks.penalty()
    >>> binary = masks.binary_masks(); masks.detach(); HardMasks.apply(model, binary)
    """

    def __init__(self, model: nn.Module, names: list[str], parts: dict[str, SoftMask]) -> None:
        self.model = model
        self.names = names
        self.parts = parts

    @classmethod
    def attach(cls, model: nn.Module, names: list[str] | None = None, s0: float = 0.0) -> "SoftMasks":
        names, parts = attach_parametrizations(
            model, names, lambda weight: SoftMask(weight, s0), "mask")
        return cls(model, names, parts)

    # --- what the CS method drives -------------------------------------------------------------
    def logits(self) -> list[nn.Parameter]:
        return [part.logits for part in self.parts.values()]

    def weights(self) -> list[nn.Parameter]:
        """The underlying (unmasked) weight parameters."""
        return [self._module(name).parametrizations[self._tensor(name)].original for name in self.names]

    @property
    def temperature(self) -> float:
        return float(next(iter(self.parts.values())).beta)

    def set_temperature(self, beta: float) -> None:
        for part in self.parts.values():
            part.set_beta(beta)

    def fuse_penalty(self, lambda_: float) -> None:
        """Add lambda_ * d(penalty)/ds inside the mask's backward pass.

        With this on, `penalty()` must NOT also be added to the loss for its gradient: use
        `penalty_value()` for logging.
        """
        for part in self.parts.values():
            part.set_lambda(lambda_)

    def penalty(self) -> Tensor:
        """sum over tensors of sum(sigmoid(beta*s))/sigmoid(s0): differentiable."""
        return sum(part.gate().sum() for part in self.parts.values())

    @torch.no_grad()
    def penalty_value(self) -> float:
        """The penalty for logging, summed in float64 and rounded to 0.1: a float32 sum over ~10^5
        gates depends on how many threads split it, and metrics must not (same seed -> same file)."""
        total = sum(float(part.gate().double().sum()) for part in self.parts.values())
        return round(total, 1)

    @torch.no_grad()
    def clamp_logits(self, upper: Tensor | float | None = None, multiply_by: float = 1.0) -> None:
        """s <- min(multiply_by * s, upper) (the between-round rule of CS)."""
        for part in self.parts.values():
            part.logits.mul_(multiply_by)
            if upper is not None:
                part.logits.clamp_(max=upper)

    @torch.no_grad()
    def binary_masks(self) -> dict[str, Tensor]:
        """mask = (s > 0), as bool tensors keyed by the weight's name."""
        return {name: part.logits > 0 for name, part in self.parts.items()}

    def detach(self) -> None:
        """Remove the parametrizations, leaving the raw (unmasked) weights in place."""
        for name in self.names:
            parametrize.remove_parametrizations(self._module(name), self._tensor(name), leave_parametrized=False)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: part.logits.detach().clone() for name, part in self.parts.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, part in self.parts.items():
            part.logits.copy_(state[name])

    def _module(self, name: str) -> nn.Module:
        return _split_name_unchecked(self.model, name)[0]

    def _tensor(self, name: str) -> str:
        return name.rpartition(".")[2]


def _split_name_unchecked(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, tensor_name = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), tensor_name


class HardMasks:
    """Fixed binary masks: weights zeroed once, gradients masked on every step.

    With ``scale = c != 1`` this is the released CS code's ticket retraining: the trained parameter is W
    and every forward pass computes with ``c * m * W``. We store the effective weight ``V = c * m * W``
    in the module instead and multiply its gradient by ``c**2 * m``. For SGD with momentum (Nesterov or
    not) and coupled weight decay, which every retraining here uses, the two give the same trajectory of
    effective weights: multiplying W's update rule by c turns ``c*grad_V + wd*W`` into
    ``c**2*grad_V + wd*V`` and the momentum buffer into c times itself. The forward pass stays the dense
    one (no parametrization), so checkpoints hold plain weights. `TicketRetrain` checks the optimiser.
    """

    def __init__(self, model: nn.Module, masks: dict[str, Tensor], handles: list, scale: float = 1.0) -> None:
        self.model = model
        self.masks = masks
        self.scale = scale
        self._handles = handles

    @classmethod
    @torch.no_grad()
    def apply(cls, model: nn.Module, masks: dict[str, Tensor], scale: float = 1.0,
              weights_scaled: bool = False) -> "HardMasks":
        """Zero the masked weights, multiply the kept ones by `scale`, and mask (and scale by
        ``scale**2``) their gradients. ``weights_scaled=True`` leaves the weights as they are (a resume:
        the checkpoint's weights are already masked and scaled) and only registers the gradient hooks."""
        params = dict(model.named_parameters())
        handles = []
        stored = {}
        for name, mask in masks.items():
            if name not in params:
                raise UserError(f"mask names {name!r}, which is not a parameter of {type(model).__name__}")
            weight = params[name]
            if tuple(mask.shape) != tuple(weight.shape):
                raise UserError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, the weight has {tuple(weight.shape)}"
                )
            float_mask = mask.to(device=weight.device, dtype=weight.dtype)
            if not weights_scaled:
                weight.mul_(float_mask * scale if scale != 1.0 else float_mask)
            gradient_mask = float_mask * (scale * scale) if scale != 1.0 else float_mask
            handles.append(weight.register_hook(lambda grad, m=gradient_mask: grad * m))
            stored[name] = mask.to(dtype=torch.bool)
        return cls(model, stored, handles, scale)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass(frozen=True)
class SparsityReport:
    """Counts over the prunable tensors only."""

    total: int
    remaining: int
    per_layer: dict[str, tuple[int, int]]  # name -> (remaining, total)

    @property
    def remaining_weights(self) -> float:
        return self.remaining / self.total if self.total else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.remaining_weights

    def layer_remaining(self) -> dict[str, float]:
        return {name: kept / total for name, (kept, total) in self.per_layer.items()}


def sparsity_of(masks: dict[str, Tensor]) -> SparsityReport:
    per_layer = {name: (int(mask.count_nonzero()), mask.numel()) for name, mask in masks.items()}
    return SparsityReport(
        total=sum(total for _, total in per_layer.values()),
        remaining=sum(kept for kept, _ in per_layer.values()),
        per_layer=per_layer,
    )


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state as if it carried no masks: 'fc.parametrizations.weight.original' -> 'fc.weight',
    mask logits and temperature dropped. This is what a rewind point stores."""
    plain = {}
    for key, value in model.state_dict().items():
        if ".parametrizations." in key:
            module_name, _, rest = key.partition(".parametrizations.")
            tensor_name, _, leaf = rest.partition(".")
            if leaf != "original":
                continue  # mask logits, beta
            key = f"{module_name}.{tensor_name}"
        elif key.startswith("parametrizations."):
            tensor_name, _, leaf = key[len("parametrizations."):].partition(".")
            if leaf != "original":
                continue
            key = tensor_name
        plain[key] = value.detach().clone()
    return plain
