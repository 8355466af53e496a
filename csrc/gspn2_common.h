// Shared declarations of the GSPN-2 propagation extensions (CPU and CUDA).
//
// Semantics: ../docs/ops.md and SPEC section 1. Both extensions expose, through pybind,
//
//   forward(x, gates, lam, u, directions, chunk, normalize, merge, save_hidden)
//       -> (out, hidden)
//   backward(grad_out, x, gates, lam, u, hidden, directions, chunk, normalize, merge)
//       -> (grad_x, grad_gates, grad_lam, grad_u)
//
// with x: (B, C, H, W); gates: (B, D, G, 3, H, W); lam: (B, D, C, H, W);
// u: (B, D, C, H, W) or None (it must be given when merge is true and is unused otherwise);
// directions: D distinct direction ids (Direction below), D in 1..4;
// chunk: hidden-state restart period in steps, 0 = one global scan;
// out: (B, C, H, W) = sum_d u_d * h_d when merge, else (B, D, C, H, W) = h_d;
// hidden: (B, D, C, H, W) = h_d when save_hidden and merge, else an empty tensor
//   (without merge, out itself is the hidden state the backward needs).
// All tensors share one floating dtype and device; the Python layer makes them contiguous.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace gspn2 {

enum Direction : int { kTopDown = 0, kBottomUp = 1, kLeftRight = 2, kRightLeft = 3 };

inline const char* direction_name(int d) {
  switch (d) {
    case kTopDown: return "top_down";
    case kBottomUp: return "bottom_up";
    case kLeftRight: return "left_right";
    case kRightLeft: return "right_left";
    default: return "<invalid>";
  }
}

// Vertical directions scan rows of W positions from line to line; horizontal ones, columns of H.
inline bool is_vertical(int64_t direction) {
  return direction == kTopDown || direction == kBottomUp;
}

struct PropagateShape {
  int64_t B, C, H, W, D, G;
};

inline void check_same(const torch::Tensor& t, const char* name, const torch::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, " must have the dtype of x (",
              x.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), name, " must be on the device of x (", x.device(),
              "), got ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// 1 to 4 distinct direction ids and a chunk >= 0.
inline void check_directions_and_chunk(const std::vector<int64_t>& directions, int64_t chunk) {
  const int64_t D = static_cast<int64_t>(directions.size());
  TORCH_CHECK(D >= 1 && D <= 4, "directions must hold 1 to 4 direction ids, got ", D);
  bool seen[4] = {false, false, false, false};
  for (int64_t d : directions) {
    TORCH_CHECK(d >= 0 && d < 4, "direction ids must be in [0, 4), got ", d);
    TORCH_CHECK(!seen[d], "direction ", direction_name(static_cast<int>(d)), " is repeated");
    seen[d] = true;
  }
  TORCH_CHECK(chunk >= 0, "chunk must be >= 0 (0 = global scan), got ", chunk);
}

// Validates every input and returns the problem sizes. Messages name the argument, what was
// expected and what came.
inline PropagateShape check_propagate_inputs(const torch::Tensor& x, const torch::Tensor& gates,
                                             const torch::Tensor& lam,
                                             const c10::optional<torch::Tensor>& u,
                                             const std::vector<int64_t>& directions,
                                             int64_t chunk, bool merge) {
  TORCH_CHECK(x.dim() == 4, "x must be (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.is_floating_point(), "x must be a floating tensor, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "x must be contiguous");
  check_directions_and_chunk(directions, chunk);
  const int64_t D = static_cast<int64_t>(directions.size());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(gates.dim() == 6 && gates.size(0) == B && gates.size(1) == D &&
                  gates.size(3) == 3 && gates.size(4) == H && gates.size(5) == W,
              "gates must be (B, D, G, 3, H, W) = (", B, ", ", D, ", G, 3, ", H, ", ", W,
              "), got ", gates.sizes());
  const int64_t G = gates.size(2);
  TORCH_CHECK(G >= 1 && C % G == 0, "the number of gate groups G = ", G,
              " must divide the channels C = ", C);
  check_same(gates, "gates", x);
  TORCH_CHECK(lam.sizes() == torch::IntArrayRef({B, D, C, H, W}), "lam must be (B, D, C, H, W) = (",
              B, ", ", D, ", ", C, ", ", H, ", ", W, "), got ", lam.sizes());
  check_same(lam, "lam", x);
  if (merge) {
    TORCH_CHECK(u.has_value(), "u is required when merge is true");
  }
  if (u.has_value()) {
    TORCH_CHECK(u->sizes() == lam.sizes(), "u must be (B, D, C, H, W) = ", lam.sizes(), ", got ",
                u->sizes());
    check_same(*u, "u", x);
  }
  return PropagateShape{B, C, H, W, D, G};
}

}  // namespace gspn2
