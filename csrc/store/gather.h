// CPU core of the chunk-store neighbour gather: for each chunk id, the chunk plus its continuation
// (the following tokens of the same document) as one fixed-length row, padded and masked.
// Plain function over raw arrays so every caller (ChunkStore.gather, pyretro.ops.gather_neighbors'
// CPU path) shares it. Layout of the arrays: docs/store.md.
#pragma once
#include <cstdint>

#include "pyretro/tensor_view.h"

namespace pyretro {
namespace store {

// Row j of `out` (row-major [num_ids, r]) for id = ids[j]:
//   id == -1: r x pad_id, mask all false.
//   else: d = chunk_doc[id]; start = doc_offsets[d] + (id - doc_chunks[d]) * chunk_len;
//         end = continuation ? doc_offsets[d+1] : min(start + chunk_len, doc_offsets[d+1]);
//         n = min(r, end - start); out = tokens[start:start+n] then pad_id; mask = first n true.
// tokens: token_dtype in {UInt16, UInt32, Int32, Int64}; out_dtype in {Int32, Int64}; mask may be null.
// Throws IndexError (before writing anything) for an id < -1 or >= num_chunks, and ValueError for an
// array that is inconsistent with the others (a corrupt store) instead of reading out of bounds.
// Multithreaded with pyretro::parallel_for; safe to call concurrently.
void gather_chunks_cpu(const void* tokens, DType token_dtype, int64_t num_tokens,
                       const int64_t* doc_offsets, const int64_t* doc_chunks, int64_t num_docs,
                       const int64_t* chunk_doc, int64_t num_chunks,
                       const int64_t* ids, int64_t num_ids, int64_t chunk_len, int64_t r, bool continuation,
                       void* out, DType out_dtype, bool* mask, int64_t pad_id);

}  // namespace store
}  // namespace pyretro
