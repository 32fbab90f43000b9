// bit-keras native kernels: weight standardization of a convolution kernel, forward and exact backward, on the
// CPU (built with group_norm.cc by bit_keras/models/native.py).
//
// The kernel w (float32, HWIO) is viewed as (K, O): K = kh * kw * cin rows, one column per output filter, the
// filters contiguous. Forward:
//   pass 1: per-filter sums of (w - k) and (w - k)^2, k = the filter's first value (a shift that keeps the
//           one-pass variance exact when |mean| >> std), in float32 runs of 32 rows added up in float64;
//   pass 2: w_hat = (w - mean) * r, r = 1 / sqrt(var + eps), written directly in the output dtype (float32, or
//           bfloat16 for a bf16 convolution: no float32 copy and no separate cast).
// Backward, from the gradient g of w_hat (float32 or bfloat16), with w_hat recomputed in float32:
//   pass 1: per-filter means of g and g * w_hat; pass 2: dw = r * (g - mean(g) - w_hat * mean(g * w_hat)).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"
#include "bf16.h"

using namespace tensorflow;

namespace {

using bit_keras::load;
using bit_keras::store;

// Columns per work unit: whole cache lines of filters, at least a few units per thread.
constexpr int64_t kColumns = 64;
// Rows summed in float32 before the running float64 sums take them (short runs keep the sums exact to ~1e-7).
constexpr int64_t kRows = 32;

template <typename T>
class StandardizeOp : public OpKernel {
 public:
  explicit StandardizeOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& w_t = ctx->input(0);
    OP_REQUIRES(ctx, w_t.dims() >= 2, errors::InvalidArgument("the kernel must have rank >= 2"));
    const int64_t O = w_t.dim_size(w_t.dims() - 1);
    const int64_t K = O > 0 ? w_t.NumElements() / O : 0;
    Tensor* out_t = nullptr;
    Tensor* mean_t = nullptr;
    Tensor* rstd_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w_t.shape(), &out_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({O}), &mean_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({O}), &rstd_t));
    if (K == 0 || O == 0) return;
    const float* w = w_t.flat<float>().data();
    T* out = out_t->flat<T>().data();
    float* mean = mean_t->flat<float>().data();
    float* rstd = rstd_t->flat<float>().data();
    const double eps = epsilon_;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t units = (O + kColumns - 1) / kColumns;
    pool->ParallelFor(units, K * kColumns * 6, [&](int64_t begin, int64_t end) {
      float a[kColumns], q[kColumns], k[kColumns], sc[kColumns], sh[kColumns];
      double sa[kColumns], sq[kColumns];
      for (int64_t u = begin; u < end; ++u) {
        const int64_t c0 = u * kColumns, n = std::min(kColumns, O - c0);
        for (int64_t j = 0; j < n; ++j) { k[j] = w[c0 + j]; sa[j] = 0.0; sq[j] = 0.0; }
        for (int64_t r0 = 0; r0 < K; r0 += kRows) {  // float32 runs of kRows rows, summed in float64
          for (int64_t j = 0; j < n; ++j) { a[j] = 0.f; q[j] = 0.f; }
          for (int64_t r = r0; r < std::min(K, r0 + kRows); ++r) {
            const float* row = w + r * O + c0;
            for (int64_t j = 0; j < n; ++j) {
              const float d = row[j] - k[j];
              a[j] += d;
              q[j] += d * d;
            }
          }
          for (int64_t j = 0; j < n; ++j) { sa[j] += a[j]; sq[j] += q[j]; }
        }
        for (int64_t j = 0; j < n; ++j) {
          const double s = sa[j], m2 = std::max(0.0, sq[j] - s * s / K);
          const double m = k[j] + s / K;
          const double rs = 1.0 / std::sqrt(m2 / K + eps);
          mean[c0 + j] = static_cast<float>(m);
          rstd[c0 + j] = static_cast<float>(rs);
          sc[j] = static_cast<float>(rs);
          sh[j] = static_cast<float>(-m * rs);
        }
        for (int64_t r = 0; r < K; ++r) {
          const float* row = w + r * O + c0;
          T* o = out + r * O + c0;
          for (int64_t j = 0; j < n; ++j) store(o, j, row[j] * sc[j] + sh[j]);
        }
      }
    });
  }

 private:
  float epsilon_;
};

template <typename T>
class StandardizeGradOp : public OpKernel {
 public:
  explicit StandardizeGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& g_t = ctx->input(0);
    const Tensor& w_t = ctx->input(1);
    const Tensor& mean_t = ctx->input(2);
    const Tensor& rstd_t = ctx->input(3);
    const int64_t O = w_t.dim_size(w_t.dims() - 1);
    const int64_t K = O > 0 ? w_t.NumElements() / O : 0;
    Tensor* dw_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w_t.shape(), &dw_t));
    if (K == 0 || O == 0) return;
    const T* g = g_t.flat<T>().data();
    const float* w = w_t.flat<float>().data();
    const float* mean = mean_t.flat<float>().data();
    const float* rstd = rstd_t.flat<float>().data();
    float* dw = dw_t->flat<float>().data();
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t units = (O + kColumns - 1) / kColumns;
    pool->ParallelFor(units, K * kColumns * 10, [&](int64_t begin, int64_t end) {
      float a[kColumns], b[kColumns], sc[kColumns], sh[kColumns], ca[kColumns], cb[kColumns];
      double sa[kColumns], sb[kColumns];
      for (int64_t u = begin; u < end; ++u) {
        const int64_t c0 = u * kColumns, n = std::min(kColumns, O - c0);
        for (int64_t j = 0; j < n; ++j) {
          sa[j] = 0.0;
          sb[j] = 0.0;
          sc[j] = rstd[c0 + j];
          sh[j] = static_cast<float>(-static_cast<double>(mean[c0 + j]) * rstd[c0 + j]);
        }
        for (int64_t r0 = 0; r0 < K; r0 += kRows) {
          for (int64_t j = 0; j < n; ++j) { a[j] = 0.f; b[j] = 0.f; }
          for (int64_t r = r0; r < std::min(K, r0 + kRows); ++r) {
            const float* row = w + r * O + c0;
            const T* gr = g + r * O + c0;
            for (int64_t j = 0; j < n; ++j) {
              const float gv = load(gr, j);
              a[j] += gv;
              b[j] += gv * (row[j] * sc[j] + sh[j]);
            }
          }
          for (int64_t j = 0; j < n; ++j) { sa[j] += a[j]; sb[j] += b[j]; }
        }
        // dw = r * g - r * mean(g) - w_hat * r * mean(g * w_hat)
        for (int64_t j = 0; j < n; ++j) {
          ca[j] = static_cast<float>(-static_cast<double>(sc[j]) * sa[j] / K);
          cb[j] = static_cast<float>(-static_cast<double>(sc[j]) * sb[j] / K);
        }
        for (int64_t r = 0; r < K; ++r) {
          const float* row = w + r * O + c0;
          const T* gr = g + r * O + c0;
          float* o = dw + r * O + c0;
          for (int64_t j = 0; j < n; ++j) o[j] = load(gr, j) * sc[j] + ca[j] + (row[j] * sc[j] + sh[j]) * cb[j];
        }
      }
    });
  }
};

}  // namespace

REGISTER_OP("BitStandardize")
    .Input("w: float")
    .Output("w_hat: T")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("T: {float, bfloat16}")
    .Attr("epsilon: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle w;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &w));
      c->set_output(0, w);
      shape_inference::ShapeHandle filters = c->Vector(c->Dim(w, -1));
      c->set_output(1, filters);
      c->set_output(2, filters);
      return absl::OkStatus();
    });

REGISTER_OP("BitStandardizeGrad")
    .Input("g: T")
    .Input("w: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dw: float")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("BitStandardize").Device(DEVICE_CPU).TypeConstraint<float>("T"), StandardizeOp<float>);
REGISTER_KERNEL_BUILDER(Name("BitStandardize").Device(DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),
                        StandardizeOp<Eigen::bfloat16>);
REGISTER_KERNEL_BUILDER(Name("BitStandardizeGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        StandardizeGradOp<float>);
REGISTER_KERNEL_BUILDER(Name("BitStandardizeGrad").Device(DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),
                        StandardizeGradOp<Eigen::bfloat16>);
