// The CUDA neighbour-gather kernel's per-thread body, free of CUDA built-ins (thread/block indices are
// arguments) so tests/cuda_sim can run a whole launch on the CPU against the chunk store's core. One warp per
// output row: the 32 lanes read the row's metadata (same addresses: broadcasts), then stride over the r
// tokens, so token reads and int64/bool writes are coalesced. Rows follow store::gather_chunks_cpu exactly;
// every read is bounds-guarded (an id outside [0, C) or an inconsistent chunk gives a padded row).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define PYRETRO_HD __host__ __device__
#else
#define PYRETRO_HD
#endif

namespace pyretro {
namespace gather_kernel {

constexpr int kWarpsPerBlock = 8;

struct Args {
  const void* tokens;
  int64_t num_tokens;
  const int64_t* doc_offsets;
  const int64_t* doc_chunks;
  int64_t num_docs;
  const int64_t* chunk_doc;
  int64_t num_chunks;
  const int64_t* ids;
  int64_t num_ids, chunk_len, r;
  bool continuation;
  int64_t pad;
  int64_t* out;
  bool* mask;
};

// tid = threadIdx.x in a block of kWarpsPerBlock * 32 threads; block = blockIdx.x; grid = gridDim.x.
template <class T>
PYRETRO_HD inline void gather_thread(const Args& a, int64_t tid, int64_t block, int64_t grid) {
  const T* tokens = static_cast<const T*>(a.tokens);
  const int64_t lane = tid & 31;
  const int64_t warps = grid * kWarpsPerBlock;
  for (int64_t row = block * kWarpsPerBlock + (tid >> 5); row < a.num_ids; row += warps) {
    const int64_t id = a.ids[row];
    int64_t start = 0, n = 0;
    if (id >= 0 && id < a.num_chunks) {
      const int64_t d = a.chunk_doc[id];
      if (d >= 0 && d < a.num_docs) {
        const int64_t doc_begin = a.doc_offsets[d], doc_end = a.doc_offsets[d + 1];
        const int64_t rel = id - a.doc_chunks[d];
        if (doc_begin >= 0 && doc_begin <= doc_end && doc_end <= a.num_tokens && rel >= 0 &&
            rel < (doc_end - doc_begin + a.chunk_len - 1) / a.chunk_len) {
          start = doc_begin + rel * a.chunk_len;
          int64_t stop = doc_end;
          if (!a.continuation && start + a.chunk_len < stop) stop = start + a.chunk_len;
          n = stop - start < a.r ? stop - start : a.r;
        }
      }
    }
    int64_t* o = a.out + row * a.r;
    bool* m = a.mask + row * a.r;
    for (int64_t t = lane; t < a.r; t += 32) {
      const bool valid = t < n;
      o[t] = valid ? static_cast<int64_t>(tokens[start + t]) : a.pad;
      m[t] = valid;
    }
  }
}

}  // namespace gather_kernel
}  // namespace pyretro
