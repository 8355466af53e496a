// Compile-time helpers shared by the kernel files (propagate_kernels.cuh, propagate_local.cu).
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

}  // namespace cuda
}  // namespace gspn2
