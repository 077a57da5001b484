#include "store/gather.h"

#include <algorithm>
#include <cstring>

#include "pyretro/parallel.h"

namespace pyretro {
namespace store {
namespace {

struct Arrays {
  const int64_t* doc_offsets;
  const int64_t* doc_chunks;
  const int64_t* chunk_doc;
  int64_t num_tokens, num_docs, chunk_len;
};

// Rows are processed in groups: the dependent random reads (ids -> chunk_doc -> doc_offsets/doc_chunks
// -> tokens) of a whole group are issued as prefetches before any is consumed, so their cache/TLB misses
// overlap instead of queueing one after another.
constexpr int64_t kGroup = 32;

template <class T, class O>
void gather_range(const T* tokens, const Arrays& a, const int64_t* ids, int64_t begin, int64_t end, int64_t r,
                  bool continuation, O* out, bool* mask, O pad) {
  int64_t start[kGroup], len[kGroup], doc[kGroup];
  for (int64_t g0 = begin; g0 < end; g0 += kGroup) {
    const int64_t g = std::min(kGroup, end - g0);
    for (int64_t k = 0; k < g; ++k)
      if (ids[g0 + k] >= 0) __builtin_prefetch(a.chunk_doc + ids[g0 + k]);
    for (int64_t k = 0; k < g; ++k) {
      const int64_t id = ids[g0 + k];
      doc[k] = id >= 0 ? a.chunk_doc[id] : -1;
      if (doc[k] >= 0 && doc[k] < a.num_docs) {
        __builtin_prefetch(a.doc_offsets + doc[k]);
        __builtin_prefetch(a.doc_offsets + doc[k] + 1);
        __builtin_prefetch(a.doc_chunks + doc[k]);
      }
    }
    for (int64_t k = 0; k < g; ++k) {
      const int64_t id = ids[g0 + k], d = doc[k];
      start[k] = 0;
      len[k] = 0;
      if (id < 0) continue;
      PYRETRO_CHECK(d >= 0 && d < a.num_docs, ValueError, "corrupt chunk store: chunk_doc[", id, "] = ", d,
                    " is not a document id (num_docs ", a.num_docs, ")");
      const int64_t doc_begin = a.doc_offsets[d], doc_end = a.doc_offsets[d + 1];
      const int64_t rel = id - a.doc_chunks[d];
      PYRETRO_CHECK(doc_begin >= 0 && doc_begin <= doc_end && doc_end <= a.num_tokens && rel >= 0 &&
                        rel < (doc_end - doc_begin + a.chunk_len - 1) / a.chunk_len,
                    ValueError, "corrupt chunk store: chunk ", id, " of document ", d,
                    " lies outside the document's tokens");
      start[k] = doc_begin + rel * a.chunk_len;
      const int64_t stop = continuation ? doc_end : std::min(start[k] + a.chunk_len, doc_end);
      len[k] = std::min(r, stop - start[k]);
      const char* p = reinterpret_cast<const char*>(tokens + start[k]);
      const char* q = reinterpret_cast<const char*>(tokens + start[k] + len[k]);
      for (; p < q; p += 64) __builtin_prefetch(p);
    }
    for (int64_t k = 0; k < g; ++k) {
      O* o = out + (g0 + k) * r;
      const T* src = tokens + start[k];
      const int64_t n = len[k];
      for (int64_t t = 0; t < n; ++t) o[t] = static_cast<O>(src[t]);
      for (int64_t t = n; t < r; ++t) o[t] = pad;
      if (mask) {
        bool* m = mask + (g0 + k) * r;
        std::memset(m, 1, static_cast<size_t>(n));
        std::memset(m + n, 0, static_cast<size_t>(r - n));
      }
    }
  }
}

template <class T>
void dispatch_out(const T* tokens, const Arrays& a, const int64_t* ids, int64_t num_ids, int64_t r,
                  bool continuation, void* out, DType out_dtype, bool* mask, int64_t pad_id) {
  const int64_t grain = std::max<int64_t>(kGroup, 16384 / std::max<int64_t>(r, 1));
  parallel_for(num_ids, grain, [&](int64_t b, int64_t e) {
    if (out_dtype == DType::Int64)
      gather_range<T, int64_t>(tokens, a, ids, b, e, r, continuation, static_cast<int64_t*>(out), mask, pad_id);
    else
      gather_range<T, int32_t>(tokens, a, ids, b, e, r, continuation, static_cast<int32_t*>(out), mask,
                               static_cast<int32_t>(pad_id));
  });
}

}  // namespace

void gather_chunks_cpu(const void* tokens, DType token_dtype, int64_t num_tokens,
                       const int64_t* doc_offsets, const int64_t* doc_chunks, int64_t num_docs,
                       const int64_t* chunk_doc, int64_t num_chunks,
                       const int64_t* ids, int64_t num_ids, int64_t chunk_len, int64_t r, bool continuation,
                       void* out, DType out_dtype, bool* mask, int64_t pad_id) {
  PYRETRO_CHECK(chunk_len > 0, ValueError, "chunk_len: must be positive, got ", chunk_len);
  PYRETRO_CHECK(r > 0, ValueError, "r: must be positive, got ", r);
  PYRETRO_CHECK(num_tokens >= 0 && num_docs >= 0 && num_chunks >= 0 && num_ids >= 0, ValueError,
                "negative array size");
  PYRETRO_CHECK(out_dtype == DType::Int64 || out_dtype == DType::Int32, TypeError,
                "out: expected dtype int64 or int32, got ", dtype_name(out_dtype));
  if (out_dtype == DType::Int32)
    PYRETRO_CHECK(pad_id >= INT32_MIN && pad_id <= INT32_MAX, ValueError, "pad_id: ", pad_id,
                  " does not fit an int32 output");
  // Validate every id before writing anything.
  for (int64_t j = 0; j < num_ids; ++j) {
    const int64_t id = ids[j];
    if (id < -1 || id >= num_chunks)
      throw IndexError(str("neighbor_ids: chunk id ", id, " (at flat position ", j, ") is out of range; valid ",
                           "ids are -1 (missing) and [0, ", num_chunks, ")"));
  }
  Arrays a{doc_offsets, doc_chunks, chunk_doc, num_tokens, num_docs, chunk_len};
  switch (token_dtype) {
    case DType::UInt16:
      return dispatch_out(static_cast<const uint16_t*>(tokens), a, ids, num_ids, r, continuation, out, out_dtype,
                          mask, pad_id);
    case DType::UInt32:
      return dispatch_out(static_cast<const uint32_t*>(tokens), a, ids, num_ids, r, continuation, out, out_dtype,
                          mask, pad_id);
    case DType::Int32:
      return dispatch_out(static_cast<const int32_t*>(tokens), a, ids, num_ids, r, continuation, out, out_dtype,
                          mask, pad_id);
    case DType::Int64:
      return dispatch_out(static_cast<const int64_t*>(tokens), a, ids, num_ids, r, continuation, out, out_dtype,
                          mask, pad_id);
    default:
      throw TypeError(str("tokens: expected dtype uint16, uint32, int32 or int64, got ", dtype_name(token_dtype)));
  }
}

}  // namespace store
}  // namespace pyretro
