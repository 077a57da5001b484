#include "store/gather.h"

#include <algorithm>
#include <vector>

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

// Memory-latency bound: every row needs dependent random reads (ids -> chunk_doc -> doc_offsets /
// doc_chunks -> tokens). The loop is software-pipelined: while row j is copied, the token lines of row
// j + kDC, the index entries of row j + kDC + kDB and the chunk_doc entry of row j + kDC + kDB + kDA are
// being fetched, so many misses are in flight and they overlap with the writes.
constexpr int64_t kDA = 16;             // chunk_doc prefetch -> read
constexpr int64_t kDB = 8;              // doc_offsets/doc_chunks prefetch -> read
constexpr int64_t kDC = 8;              // token lines prefetch -> copy
constexpr int64_t kRing = 64;           // > kDB + kDC, power of two
constexpr int64_t kMaxPrefetch = 1024;  // bytes of a row prefetched (rows are usually 2 * chunk_len tokens)

// One row: widen n tokens, pad to r, and the mask (copied from `pattern`: r ones then r zeros). This is
// the bulk of the arithmetic; on x86-64 it is compiled twice (AVX2 and baseline) and picked at load
// time, since wheels cannot assume AVX2.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(PYRETRO_NO_TARGET_CLONES)
#define PYRETRO_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PYRETRO_CLONES
#endif
#define PYRETRO_ROW_COPY(T, O)                                                                       \
  PYRETRO_CLONES void copy_row(const T* __restrict src, int64_t n, O* __restrict dst, int64_t r, O pad,     \
                               uint8_t* __restrict mask, const uint8_t* __restrict pattern) {        \
    for (int64_t t = 0; t < n; ++t) dst[t] = static_cast<O>(src[t]);                                 \
    for (int64_t t = n; t < r; ++t) dst[t] = pad;                                                    \
    if (mask) {                                                                                      \
      const uint8_t* p = pattern + (r - n);                                                          \
      for (int64_t t = 0; t < r; ++t) mask[t] = p[t];                                                \
    }                                                                                                \
  }
PYRETRO_ROW_COPY(uint16_t, int64_t)
PYRETRO_ROW_COPY(uint16_t, int32_t)
PYRETRO_ROW_COPY(uint32_t, int64_t)
PYRETRO_ROW_COPY(uint32_t, int32_t)
PYRETRO_ROW_COPY(int32_t, int64_t)
PYRETRO_ROW_COPY(int32_t, int32_t)
PYRETRO_ROW_COPY(int64_t, int64_t)
PYRETRO_ROW_COPY(int64_t, int32_t)
#undef PYRETRO_ROW_COPY

template <class T, class O>
void gather_range(const T* tokens, const Arrays& a, const int64_t* ids, int64_t begin, int64_t end, int64_t r,
                  bool continuation, O* out, uint8_t* mask, O pad, const uint8_t* pattern) {
  const int64_t n = end - begin;
  ids += begin;
  int64_t doc[kRing], start[kRing], len[kRing];
  constexpr int64_t M = kRing - 1;
  for (int64_t j = 0; j < n + kDA + kDB + kDC; ++j) {
    // Stage A (row j): fetch its chunk_doc entry.
    if (j < n && ids[j] >= 0) __builtin_prefetch(a.chunk_doc + ids[j]);
    // Stage B (row jb): read the document, fetch its index entries.
    const int64_t jb = j - kDA;
    if (jb >= 0 && jb < n) {
      const int64_t d = ids[jb] >= 0 ? a.chunk_doc[ids[jb]] : -1;
      doc[jb & M] = d;
      if (d >= 0 && d < a.num_docs) {
        __builtin_prefetch(a.doc_offsets + d);
        __builtin_prefetch(a.doc_offsets + d + 1);
        __builtin_prefetch(a.doc_chunks + d);
      }
    }
    // Stage C (row jc): the token span, bounds-checked against the document (a corrupt store raises);
    // fetch its token lines.
    const int64_t jc = jb - kDB;
    if (jc >= 0 && jc < n) {
      const int64_t id = ids[jc], d = doc[jc & M];
      int64_t s0 = 0, l0 = 0;
      if (id >= 0) {
        PYRETRO_CHECK(d >= 0 && d < a.num_docs, ValueError, "corrupt chunk store: chunk_doc[", id, "] = ", d,
                      " is not a document id (num_docs ", a.num_docs, ")");
        const int64_t doc_begin = a.doc_offsets[d], doc_end = a.doc_offsets[d + 1];
        const int64_t rel = id - a.doc_chunks[d];
        PYRETRO_CHECK(doc_begin >= 0 && doc_begin <= doc_end && doc_end <= a.num_tokens && rel >= 0 &&
                          rel < (doc_end - doc_begin + a.chunk_len - 1) / a.chunk_len,
                      ValueError, "corrupt chunk store: chunk ", id, " of document ", d,
                      " lies outside the document's tokens");
        s0 = doc_begin + rel * a.chunk_len;
        const int64_t stop = continuation ? doc_end : std::min(s0 + a.chunk_len, doc_end);
        l0 = std::min(r, stop - s0);
        const char* p = reinterpret_cast<const char*>(tokens + s0);
        const int64_t bytes = std::min<int64_t>(l0 * int64_t(sizeof(T)), kMaxPrefetch);
        for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o);
      }
      start[jc & M] = s0;
      len[jc & M] = l0;
    }
    // Stage D (row jd): copy.
    const int64_t jd = jc - kDC;
    if (jd >= 0 && jd < n)
      copy_row(tokens + start[jd & M], len[jd & M], out + (begin + jd) * r, r, pad,
               mask ? mask + (begin + jd) * r : nullptr, pattern);
  }
}

template <class T>
void dispatch_out(const T* tokens, const Arrays& a, const int64_t* ids, int64_t num_ids, int64_t r,
                  bool continuation, void* out, DType out_dtype, bool* mask_b, int64_t pad_id) {
  const int64_t grain = std::max<int64_t>(256, 65536 / r);  // rows per task (~64K output tokens)
  uint8_t* mask = reinterpret_cast<uint8_t*>(mask_b);  // bool is one byte holding 0 or 1
  std::vector<uint8_t> pattern(mask ? 2 * r : 0, 0);
  std::fill(pattern.begin(), pattern.begin() + (mask ? r : 0), 1);
  parallel_for(num_ids, grain, [&](int64_t b, int64_t e) {
    if (out_dtype == DType::Int64)
      gather_range<T, int64_t>(tokens, a, ids, b, e, r, continuation, static_cast<int64_t*>(out), mask, pad_id,
                               pattern.data());
    else
      gather_range<T, int32_t>(tokens, a, ids, b, e, r, continuation, static_cast<int32_t*>(out), mask,
                               static_cast<int32_t>(pad_id), pattern.data());
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
