// Fused CPU kernels for the CS soft mask (see cs_repro/kernels/__init__.py for how this is built).
//
//   forward:  out    = scale * W * g,                  g = sigmoid(beta * s)
//   backward: grad_W = scale * grad * g
//             grad_s = beta * scale * (grad * W + lambda) * g * (1 - g)
//
// lambda folds the mask penalty lambda * scale * sum(g) into the backward pass. Each direction is one
// pass over the weight-sized tensors; g is recomputed in the backward pass instead of being stored,
// because on a CPU reading a weight-sized tensor back from L3 costs more than one exp per element.
//
// Bitwise reproducibility across thread counts: at::parallel_for cuts the range at places that
// depend on the thread count, so every element must get the same bits whether the compiler puts it
// in a vector body or a scalar tail. The sigmoid below therefore uses only correctly rounded IEEE
// operations (explicit fmaf, +, *, /, comparisons, bit moves) and the file is compiled with
// -ffp-contract=off and without -ffast-math, so the vector and scalar versions agree to the bit. It is
// also compiled with -fno-trapping-math: the loops only vectorise on AVX2 if the clamps' branches may
// become selects, which computes both sides (changing only FP exception flags, never a value).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace {

constexpr int64_t kGrain = 16384;  // below this one thread is faster than waking the others

// exp(x) with a relative error of ~1.2e-7 (about 1 ulp): x = k ln2 + r, |r| <= ln2/2, then a
// degree-7 polynomial for e^r (Cephes' coefficients) and 2^k assembled in the exponent bits. x is
// clamped so that 2^k stays a normal float; above the clamp the result is +inf, as exp's is, so that a
// saturated gate 1/(1 + exp(-beta*s)) is exactly 0 (a tiny normal gate would turn W*g subnormal).
// Rounding to the nearest integer by adding and removing 1.5 * 2^23 is exact in IEEE arithmetic (the
// default rounding mode) and vectorises everywhere, unlike std::rint.
__attribute__((always_inline)) inline float exp_approx(float x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const bool overflows = x > 88.0f;
  x = x < -87.0f ? -87.0f : (overflows ? 88.0f : x);
  const float k = (x * 1.44269504088896341f + kRound) - kRound;
  float r = std::fmaf(k, -0.693145751953125f, x);
  r = std::fmaf(k, -1.428606765330187045e-06f, r);
  float p = 1.9875691500e-4f;
  p = std::fmaf(p, r, 1.3981999507e-3f);
  p = std::fmaf(p, r, 8.3334519073e-3f);
  p = std::fmaf(p, r, 4.1665795894e-2f);
  p = std::fmaf(p, r, 1.6666665459e-1f);
  p = std::fmaf(p, r, 5.0000001201e-1f);
  p = std::fmaf(p * r, r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float two_to_k;
  std::memcpy(&two_to_k, &bits, sizeof(float));
  return overflows ? std::numeric_limits<float>::infinity() : p * two_to_k;
}

__attribute__((always_inline)) inline float sigmoid_of(float beta_s) { return 1.0f / (1.0f + exp_approx(-beta_s)); }

void check_inputs(const at::Tensor& weight, const at::Tensor& logits) {
  TORCH_CHECK(weight.device().is_cpu() && logits.device().is_cpu(), "soft_masked_weight: CPU tensors only");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && logits.scalar_type() == at::kFloat,
              "soft_masked_weight: float32 tensors only");
  TORCH_CHECK(weight.sizes() == logits.sizes(), "soft_masked_weight: weight and logits differ in shape");
}

at::Tensor forward_kernel(const at::Tensor& weight_in, const at::Tensor& logits_in, double beta, double scale) {
  check_inputs(weight_in, logits_in);
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor out = at::empty_like(weight, at::MemoryFormat::Contiguous);
  const float* w = weight.const_data_ptr<float>();
  const float* s = logits.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  const float b = static_cast<float>(beta);
  const float c = static_cast<float>(scale);
  at::parallel_for(0, weight.numel(), kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      o[i] = c * w[i] * sigmoid_of(b * s[i]);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_kernel(const at::Tensor& grad_in, const at::Tensor& weight,
                                                   const at::Tensor& logits, double beta, double scale,
                                                   double lambda_, bool want_weight, bool want_logits) {
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_weight = want_weight ? at::empty_like(weight, at::MemoryFormat::Contiguous) : at::Tensor();
  at::Tensor grad_logits = want_logits ? at::empty_like(logits, at::MemoryFormat::Contiguous) : at::Tensor();
  const float* g_out = grad.const_data_ptr<float>();
  const float* w = weight.const_data_ptr<float>();
  const float* s = logits.const_data_ptr<float>();
  float* gw = want_weight ? grad_weight.mutable_data_ptr<float>() : nullptr;
  float* gs = want_logits ? grad_logits.mutable_data_ptr<float>() : nullptr;
  const float b = static_cast<float>(beta);
  const float c = static_cast<float>(scale);
  const float bc = b * c;
  const float lam = static_cast<float>(lambda_);
  at::parallel_for(0, weight.numel(), kGrain, [&](int64_t begin, int64_t end) {
    if (gw && gs) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        const float g = sigmoid_of(b * s[i]);
        gw[i] = c * g_out[i] * g;
        gs[i] = bc * (g_out[i] * w[i] + lam) * (g * (1.0f - g));
      }
    } else if (gw) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) gw[i] = c * g_out[i] * sigmoid_of(b * s[i]);
    } else if (gs) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        const float g = sigmoid_of(b * s[i]);
        gs[i] = bc * (g_out[i] * w[i] + lam) * (g * (1.0f - g));
      }
    }
  });
  return {grad_weight, grad_logits};
}

class SoftMaskedWeight : public torch::autograd::Function<SoftMaskedWeight> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& weight,
                            const at::Tensor& logits, double beta, double scale, double lambda_) {
    ctx->save_for_backward({weight.contiguous(), logits.contiguous()});
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["lambda_"] = lambda_;
    at::AutoDispatchBelowADInplaceOrView guard;
    return forward_kernel(weight, logits, beta, scale);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_weight, grad_logits] = backward_kernel(
        grad_outputs[0], saved[0], saved[1], ctx->saved_data["beta"].toDouble(),
        ctx->saved_data["scale"].toDouble(), ctx->saved_data["lambda_"].toDouble(),
        ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    return {grad_weight, grad_logits, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor soft_masked_weight_autograd(const at::Tensor& weight, const at::Tensor& logits, double beta,
                                       double scale, double lambda_) {
  return SoftMaskedWeight::apply(weight, logits, beta, scale, lambda_);
}

at::Tensor soft_masked_weight_cpu(const at::Tensor& weight, const at::Tensor& logits, double beta, double scale,
                                  double lambda_) {
  return forward_kernel(weight, logits, beta, scale);
}

}  // namespace

TORCH_LIBRARY(cs_repro, m) {
  m.def("soft_masked_weight(Tensor weight, Tensor logits, float beta, float scale, float lambda_) -> Tensor");
}

TORCH_LIBRARY_IMPL(cs_repro, CPU, m) { m.impl("soft_masked_weight", &soft_masked_weight_cpu); }

TORCH_LIBRARY_IMPL(cs_repro, AutogradCPU, m) { m.impl("soft_masked_weight", &soft_masked_weight_autograd); }
