// Compile-time helpers shared by the kernel files (line_scan_common.cuh, propagate_local.cu,
// propagate_small.cu).
#pragma once

#include <type_traits>

namespace gspn2 {
namespace cuda {

// Runs `...` (a lambda body using NAME as a constexpr bool) with NAME = cond.
#define GSPN2_BOOL_SWITCH(cond, NAME, ...) \
  [&] {                                   \
    if (cond) {                           \
      constexpr bool NAME = true;         \
      return __VA_ARGS__();               \
    } else {                              \
      constexpr bool NAME = false;        \
      return __VA_ARGS__();               \
    }                                     \
  }()

// Accumulation type of a storage type.
template <typename T>
using Acc = std::conditional_t<std::is_same<T, double>::value, double, float>;

// Saturated tap logits: below -kTapShift, sigmoid(a) = exp(a) to a relative 1e-26, so the
// normalisation of the tap weights may shift every logit of a position by the same amount (see
// normalized_taps in line_scan_common.cuh and position_taps::tap_weights).
constexpr float kTapShift = 60.f;

}  // namespace cuda
}  // namespace gspn2
