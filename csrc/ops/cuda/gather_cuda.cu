// Device neighbour gather: one launch on the caller's stream. Kernel body: gather_kernel.cuh (shared with the
// host simulator used by the tests).
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/gather_kernel.cuh"
#include "ops/gather.h"

namespace pyretro {
namespace {

using gather_kernel::kWarpsPerBlock;

template <class T>
__global__ void gather_kernel_launch(const gather_kernel::Args a) {
  gather_kernel::gather_thread<T>(a, threadIdx.x, blockIdx.x, gridDim.x);
}

int sm_count(int device) {
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
  return n;
}

template <class T>
void launch(const TensorView& tokens, const TensorView& doc_offsets, const TensorView& doc_chunks,
            const TensorView& chunk_doc, const TensorView& ids, int64_t chunk_len, int64_t r, bool continuation,
            int64_t pad_id, const TensorView& out, const TensorView& mask, cudaStream_t stream) {
  const int64_t n = ids.numel();
  const int64_t want = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t cap = static_cast<int64_t>(sm_count(ids.device_index)) * 32;
  const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap)));
  const gather_kernel::Args a{tokens.data, tokens.numel(), doc_offsets.ptr<int64_t>(), doc_chunks.ptr<int64_t>(),
                              doc_offsets.numel() - 1, chunk_doc.ptr<int64_t>(), chunk_doc.numel(),
                              ids.ptr<int64_t>(), n, chunk_len, r, continuation, pad_id, out.ptr<int64_t>(),
                              mask.ptr<bool>()};
  gather_kernel_launch<T><<<grid, kWarpsPerBlock * 32, 0, stream>>>(a);
  const cudaError_t err = cudaGetLastError();
  PYRETRO_CHECK(err == cudaSuccess, ValueError, "gather_neighbors: CUDA launch failed: ", cudaGetErrorString(err));
}

struct DeviceGuard {
  int prev = 0;
  bool changed = false;
  explicit DeviceGuard(int device) {
    cudaGetDevice(&prev);
    changed = device >= 0 && device != prev;
    if (changed) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (changed) cudaSetDevice(prev);
  }
};

}  // namespace

void gather_neighbors_cuda(const TensorView& tokens, const TensorView& doc_offsets, const TensorView& doc_chunks,
                           const TensorView& chunk_doc, const TensorView& ids, int64_t chunk_len, int64_t r,
                           bool continuation, int64_t pad_id, const TensorView& out, const TensorView& mask,
                           int64_t stream_handle) {
  if (ids.numel() == 0) return;
  DeviceGuard guard(ids.device_index);
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  switch (tokens.dtype) {
    case DType::UInt16:
      launch<uint16_t>(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, continuation, pad_id, out,
                       mask, stream);
      break;
    case DType::UInt32:
      launch<uint32_t>(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, continuation, pad_id, out,
                       mask, stream);
      break;
    case DType::Int32:
      launch<int32_t>(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, continuation, pad_id, out,
                      mask, stream);
      break;
    default:
      launch<int64_t>(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, continuation, pad_id, out,
                      mask, stream);
      break;
  }
}

}  // namespace pyretro
