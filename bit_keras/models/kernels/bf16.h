// bit-keras native kernels: element access for float32 and bfloat16 tensors, computing in float32.
// bfloat16 -> float32 is a 16-bit shift; float32 -> bfloat16 rounds to nearest even (NaN stays a quiet NaN).
// Plain integer code, so the compiler vectorizes the loops that use it.
#ifndef BIT_KERAS_KERNELS_BF16_H_
#define BIT_KERAS_KERNELS_BF16_H_

#include <cstdint>
#include <cstring>

#include "tensorflow/core/framework/numeric_types.h"

namespace bit_keras {

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const Eigen::bfloat16* p, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(p)[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(Eigen::bfloat16* p, int64_t i, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  bits += 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest even
  reinterpret_cast<uint16_t*>(p)[i] = nan ? static_cast<uint16_t>(0x7FC0u) : static_cast<uint16_t>(bits >> 16);
}

}  // namespace bit_keras

#endif  // BIT_KERAS_KERNELS_BF16_H_
