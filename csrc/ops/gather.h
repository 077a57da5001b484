// Device neighbour gather (csrc/ops/cuda/gather_cuda.cu): the same rows as the CPU chunk store's
// store::gather_chunks_cpu (csrc/store/gather.h, docs/store.md), for store arrays resident in GPU memory.
#pragma once
#include <cstdint>

#include "pyretro/tensor_view.h"

namespace pyretro {

#ifdef PYRETRO_WITH_CUDA
// tokens: [T] uint16/uint32/int32/int64; doc_offsets, doc_chunks: int64 [D+1]; chunk_doc: int64 [C];
// ids: int64 [N] (contiguous), out: int64 [N, r], mask: bool [N, r] (contiguous). All on one CUDA device.
// Ids are NOT range-checked here (the Python wrapper does it with one sync); instead every read is bounds
// guarded: an id outside [0, C) or a chunk whose span is inconsistent with the arrays yields a padded row.
void gather_neighbors_cuda(const TensorView& tokens, const TensorView& doc_offsets, const TensorView& doc_chunks,
                           const TensorView& chunk_doc, const TensorView& ids, int64_t chunk_len, int64_t r,
                           bool continuation, int64_t pad_id, const TensorView& out, const TensorView& mask,
                           int64_t stream);
#endif

}  // namespace pyretro
