// The horizontal directions of long lines through transposed planes (propagate.h; the launch
// plan says which): the transposes themselves (transpose.cu) and the side stream that runs
// the in-place half beside them. Used by bindings.cpp.
#pragma once

#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cstdint>
#include <vector>

#include "cuda/propagate.h"
#include "gspn2_common.h"

namespace gspn2 {
namespace cuda {

// (B, K, H, W) -> (B, K, W, H); with `into`, written (or added) there instead.
torch::Tensor transposed_image(const torch::Tensor& t, torch::Tensor into = {},
                               bool accumulate = false);

// (B, D, ..., H, W) -> (B, E, ..., W, H): the planes of direction entries `entries`.
torch::Tensor take_transposed(const torch::Tensor& t, const std::vector<int64_t>& entries);

// dst[:, entries[e]] = transpose of src[:, e], src (B, E, ..., W, H), dst (B, D, ..., H, W).
void put_transposed(const torch::Tensor& src, torch::Tensor& dst,
                    const std::vector<int64_t>& entries);

// Work run on a stream from the pool after the current stream's work so far. join() makes the
// current stream wait for it; so does the destructor, also when an error unwinds the caller,
// so that no tensor the work writes goes back to the allocator while it runs. Tensors
// allocated inside the work belong to the side stream.
class SideStream {
 public:
  template <typename Work>
  void run(const torch::Tensor& like, Work&& work) {
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, like.device().index());
    c10::cuda::CUDAEvent ready;
    ready.record(current);
    ready.block(side);
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      work();
    }
    done_.record(side);
    pending_ = true;
  }
  void join() {
    if (pending_) done_.block(c10::cuda::getCurrentCUDAStream());
    pending_ = false;
  }
  ~SideStream() {
    try {
      join();
    } catch (...) {  // already unwinding from an error, or the device is lost
    }
  }

 private:
  c10::cuda::CUDAEvent done_;
  bool pending_ = false;
};

}  // namespace cuda
}  // namespace gspn2
