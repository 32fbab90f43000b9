// bit-keras native kernels: GroupNorm (+ the ReLU that follows it in a pre-activation unit), forward and exact
// backward, for channels-last float32 and bfloat16 tensors on the CPU. Built on first use against the installed
// TensorFlow by bit_keras/models/native.py (which also holds the Python side: gradient registration and the
// rules for when the layers use these kernels).
//
// Forward, over x viewed as (N, HW, C) with G groups of C/G channels:
//   pass 1: per (sample, row block, channel) sums of (x - k) and (x - k)^2, k = the sample's first row (a shift
//           that keeps the one-pass variance free of cancellation when |mean| >> std), accumulated in float32
//           from bf16 input without a float32 copy; blocks and channels are combined in float64 (Chan et al.);
//   pass 2: y = x * scale + shift per (sample, channel), then max(y, 0) when relu.
// Backward, with dy' = dy masked by the ReLU (recomputed from x and the saved statistics):
//   pass 1: per-channel sums of dy' and dy' * (x - mean); pass 2: dx = dy' * scale + (x - mean) * a + b.
// Outputs keep the input dtype; statistics are float32 (N, G) tensors for the backward.
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

// Rows per work unit so that each unit is roughly `target` values.
int64_t BlockRows(int64_t rows, int64_t channels, int64_t target = 1 << 15) {
  return std::max<int64_t>(1, std::min<int64_t>(rows, target / std::max<int64_t>(1, channels)));
}

// The per-channel affine map of the normalization, from the float statistics (forward and backward agree).
inline void ScaleShift(float mean, float rstd, float gamma, float beta, float* scale, float* shift) {
  const double sc = static_cast<double>(rstd) * gamma;
  *scale = static_cast<float>(sc);
  *shift = static_cast<float>(beta - static_cast<double>(mean) * sc);
}

struct Shape3 {
  int64_t n, hw, c;
};

Shape3 View(const Tensor& x) {
  const int rank = x.dims();
  Shape3 s{x.dim_size(0), 1, x.dim_size(rank - 1)};
  for (int d = 1; d < rank - 1; ++d) s.hw *= x.dim_size(d);
  return s;
}

template <typename T>
class GroupNormOp : public OpKernel {
 public:
  explicit GroupNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x_t = ctx->input(0);
    const Tensor& gamma_t = ctx->input(1);
    const Tensor& beta_t = ctx->input(2);
    OP_REQUIRES(ctx, x_t.dims() >= 2, errors::InvalidArgument("x must have rank >= 2"));
    const Shape3 s = View(x_t);
    OP_REQUIRES(ctx, s.c % groups_ == 0, errors::InvalidArgument("channels not divisible by groups"));
    OP_REQUIRES(ctx, gamma_t.NumElements() == s.c && beta_t.NumElements() == s.c,
                errors::InvalidArgument("gamma/beta must have one value per channel"));
    Tensor* y_t = nullptr;
    Tensor* mean_t = nullptr;
    Tensor* rstd_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &y_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({s.n, groups_}), &mean_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({s.n, groups_}), &rstd_t));
    if (x_t.NumElements() == 0) return;
    const T* x = x_t.flat<T>().data();
    T* y = y_t->flat<T>().data();
    const float* gamma = gamma_t.flat<float>().data();
    const float* beta = beta_t.flat<float>().data();
    float* mean_out = mean_t->flat<float>().data();
    float* rstd_out = rstd_t->flat<float>().data();
    const int64_t N = s.n, HW = s.hw, C = s.c, G = groups_, CG = C / G;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;

    // Pass 1: per (sample, block, channel) sums of (x - k) and (x - k)^2 with k = the sample's first row.
    const int64_t br = BlockRows(HW, C);
    const int64_t blocks = (HW + br - 1) / br;
    std::vector<float> s1(N * blocks * C), s2(N * blocks * C);
    pool->ParallelFor(N * blocks, br * C * 4, [&](int64_t begin, int64_t end) {
      std::vector<float> k(C);
      for (int64_t u = begin; u < end; ++u) {
        const int64_t n = u / blocks, b = u % blocks;
        const int64_t r0 = b * br, r1 = std::min(HW, r0 + br);
        const T* xs = x + n * HW * C;
        float* a = s1.data() + u * C;
        float* q = s2.data() + u * C;
        for (int64_t c = 0; c < C; ++c) { k[c] = load(xs, c); a[c] = 0.f; q[c] = 0.f; }
        for (int64_t r = r0; r < r1; ++r) {
          const T* row = xs + r * C;
          for (int64_t c = 0; c < C; ++c) {
            const float d = load(row, c) - k[c];
            a[c] += d;
            q[c] += d * d;
          }
        }
      }
    });
    // Combine (double): per channel mean and M2 from the shifted sums, then per group (Chan et al.).
    std::vector<float> scale(N * C), shift(N * C);
    std::vector<double> cm(CG), cm2(CG);
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + n * HW * C;
      for (int64_t g = 0; g < G; ++g) {
        double mean_sum = 0.0;
        for (int64_t j = 0; j < CG; ++j) {
          const int64_t c = g * CG + j;
          double a = 0.0, q = 0.0;
          for (int64_t b = 0; b < blocks; ++b) {
            a += s1[(n * blocks + b) * C + c];
            q += s2[(n * blocks + b) * C + c];
          }
          const double k = load(xs, c);
          cm[j] = k + a / HW;
          cm2[j] = std::max(0.0, q - a * a / HW);
          mean_sum += cm[j];
        }
        const double gm = mean_sum / CG;
        double m2 = 0.0;
        for (int64_t j = 0; j < CG; ++j) m2 += cm2[j] + HW * (cm[j] - gm) * (cm[j] - gm);
        const double var = m2 / (HW * CG);
        const double r = 1.0 / std::sqrt(var + epsilon_);
        const float mf = static_cast<float>(gm), rf = static_cast<float>(r);
        mean_out[n * G + g] = mf;
        rstd_out[n * G + g] = rf;
        for (int64_t j = 0; j < CG; ++j) {
          const int64_t c = g * CG + j;
          ScaleShift(mf, rf, gamma[c], beta[c], &scale[n * C + c], &shift[n * C + c]);
        }
      }
    }
    // Pass 2: y = x * scale + shift (then ReLU).
    const bool relu = relu_;
    pool->ParallelFor(N * blocks, br * C * 3, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        const int64_t n = u / blocks, b = u % blocks;
        const int64_t r0 = b * br, r1 = std::min(HW, r0 + br);
        const float* sc = scale.data() + n * C;
        const float* sh = shift.data() + n * C;
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t o = (n * HW + r) * C;
          const T* row = x + o;
          T* out = y + o;
          if (relu) {
            for (int64_t c = 0; c < C; ++c) store(out, c, std::max(0.f, load(row, c) * sc[c] + sh[c]));
          } else {
            for (int64_t c = 0; c < C; ++c) store(out, c, load(row, c) * sc[c] + sh[c]);
          }
        }
      }
    });
  }

 private:
  int groups_;
  float epsilon_;
  bool relu_;
};

template <typename T>
class GroupNormGradOp : public OpKernel {
 public:
  explicit GroupNormGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy_t = ctx->input(0);
    const Tensor& x_t = ctx->input(1);
    const Tensor& gamma_t = ctx->input(2);
    const Tensor& beta_t = ctx->input(3);
    const Tensor& mean_t = ctx->input(4);
    const Tensor& rstd_t = ctx->input(5);
    const Shape3 s = View(x_t);
    Tensor* dx_t = nullptr;
    Tensor* dgamma_t = nullptr;
    Tensor* dbeta_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &dx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma_t.shape(), &dgamma_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma_t.shape(), &dbeta_t));
    const int64_t N = s.n, HW = s.hw, C = s.c, G = groups_, CG = C / G;
    float* dgamma = dgamma_t->flat<float>().data();
    float* dbeta = dbeta_t->flat<float>().data();
    std::fill(dgamma, dgamma + C, 0.f);
    std::fill(dbeta, dbeta + C, 0.f);
    if (x_t.NumElements() == 0) return;
    const T* dy = dy_t.flat<T>().data();
    const T* x = x_t.flat<T>().data();
    T* dx = dx_t->flat<T>().data();
    const float* gamma = gamma_t.flat<float>().data();
    const float* beta = beta_t.flat<float>().data();
    const float* mean = mean_t.flat<float>().data();
    const float* rstd = rstd_t.flat<float>().data();
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const bool relu = relu_;

    // Per (sample, channel): centred mean m, scale and shift as in the forward (for the ReLU mask).
    std::vector<float> mc(N * C), sc(N * C), sh(N * C);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const float m = mean[n * G + c / CG], r = rstd[n * G + c / CG];
        mc[n * C + c] = m;
        ScaleShift(m, r, gamma[c], beta[c], &sc[n * C + c], &sh[n * C + c]);
      }

    // Pass 1: per (sample, block, channel) sums of dy' and dy' * (x - mean), dy' = dy masked by the ReLU.
    const int64_t br = BlockRows(HW, C);
    const int64_t blocks = (HW + br - 1) / br;
    std::vector<float> s1(N * blocks * C), s2(N * blocks * C);
    pool->ParallelFor(N * blocks, br * C * 6, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        const int64_t n = u / blocks, b = u % blocks;
        const int64_t r0 = b * br, r1 = std::min(HW, r0 + br);
        float* a = s1.data() + u * C;
        float* q = s2.data() + u * C;
        const float* m = mc.data() + n * C;
        const float* scn = sc.data() + n * C;
        const float* shn = sh.data() + n * C;
        for (int64_t c = 0; c < C; ++c) { a[c] = 0.f; q[c] = 0.f; }
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t o = (n * HW + r) * C;
          const T* xr = x + o;
          const T* gr = dy + o;
          if (relu) {
            for (int64_t c = 0; c < C; ++c) {
              const float xv = load(xr, c);
              const float gv = load(gr, c);
              const float g = (xv * scn[c] + shn[c]) > 0.f ? gv : 0.f;
              a[c] += g;
              q[c] += g * (xv - m[c]);
            }
          } else {
            for (int64_t c = 0; c < C; ++c) {
              const float g = load(gr, c);
              a[c] += g;
              q[c] += g * (load(xr, c) - m[c]);
            }
          }
        }
      }
    });
    // Combine: per (sample, channel) sums; dgamma, dbeta; per (sample, group) a and b.
    std::vector<float> ca(N * C), cb(N * C);  // dx = dy' * sc + (x - m) * ca + cb
    std::vector<double> dg(C, 0.0), db(C, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t g = 0; g < G; ++g) {
        const double r = rstd[n * G + g];
        double ga = 0.0, gb = 0.0;
        for (int64_t j = 0; j < CG; ++j) {
          const int64_t c = g * CG + j;
          double a = 0.0, q = 0.0;
          for (int64_t b = 0; b < blocks; ++b) {
            a += s1[(n * blocks + b) * C + c];
            q += s2[(n * blocks + b) * C + c];
          }
          db[c] += a;
          dg[c] += q * r;
          ga += gamma[c] * a;
          gb += gamma[c] * q * r;
        }
        const double count = static_cast<double>(HW) * CG;
        ga /= count;
        gb /= count;
        for (int64_t j = 0; j < CG; ++j) {
          const int64_t c = g * CG + j;
          ca[n * C + c] = static_cast<float>(-r * r * gb);
          cb[n * C + c] = static_cast<float>(-r * ga);
        }
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      dgamma[c] = static_cast<float>(dg[c]);
      dbeta[c] = static_cast<float>(db[c]);
    }
    // Pass 2: dx.
    pool->ParallelFor(N * blocks, br * C * 6, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        const int64_t n = u / blocks, b = u % blocks;
        const int64_t r0 = b * br, r1 = std::min(HW, r0 + br);
        const float* m = mc.data() + n * C;
        const float* scn = sc.data() + n * C;
        const float* shn = sh.data() + n * C;
        const float* can = ca.data() + n * C;
        const float* cbn = cb.data() + n * C;
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t o = (n * HW + r) * C;
          const T* xr = x + o;
          const T* gr = dy + o;
          T* out = dx + o;
          if (relu) {
            for (int64_t c = 0; c < C; ++c) {
              const float xv = load(xr, c);
              const float gv = load(gr, c);
              const float g = (xv * scn[c] + shn[c]) > 0.f ? gv : 0.f;
              store(out, c, g * scn[c] + (xv - m[c]) * can[c] + cbn[c]);
            }
          } else {
            for (int64_t c = 0; c < C; ++c)
              store(out, c, load(gr, c) * scn[c] + (load(xr, c) - m[c]) * can[c] + cbn[c]);
          }
        }
      }
    });
  }

 private:
  int groups_;
  bool relu_;
};

}  // namespace

REGISTER_OP("BitGroupNorm")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: T")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("T: {float, bfloat16}")
    .Attr("groups: int >= 1")
    .Attr("epsilon: float")
    .Attr("relu: bool = false")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      int groups;
      TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
      shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &x));
      c->set_output(0, x);
      shape_inference::ShapeHandle stats = c->Matrix(c->Dim(x, 0), groups);
      c->set_output(1, stats);
      c->set_output(2, stats);
      return absl::OkStatus();
    });

REGISTER_OP("BitGroupNormGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: T")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("T: {float, bfloat16}")
    .Attr("groups: int >= 1")
    .Attr("relu: bool = false")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("BitGroupNorm").Device(DEVICE_CPU).TypeConstraint<float>("T"), GroupNormOp<float>);
REGISTER_KERNEL_BUILDER(Name("BitGroupNorm").Device(DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),
                        GroupNormOp<Eigen::bfloat16>);
REGISTER_KERNEL_BUILDER(Name("BitGroupNormGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        GroupNormGradOp<float>);
REGISTER_KERNEL_BUILDER(Name("BitGroupNormGrad").Device(DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),
                        GroupNormGradOp<Eigen::bfloat16>);
