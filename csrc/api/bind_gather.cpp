// _C.gather_neighbors(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, continuation, pad_id,
// out, mask, stream): the CUDA path of pyretro.ops.gather_neighbors (the CPU path is _C.store_gather).
#include "api/pyconv.h"
#include "api/registry.h"
#include "ops/gather.h"

namespace py = pybind11;

namespace pyretro {
namespace {

void check_contig(const TensorView& t) {
  if (t.numel() != 0) check_contiguous(t);
}

void gather_neighbors(const py::handle& tokens_h, const py::handle& doc_offsets_h, const py::handle& doc_chunks_h,
                      const py::handle& chunk_doc_h, const py::handle& ids_h, int64_t chunk_len, int64_t r,
                      bool continuation, int64_t pad_id, const py::handle& out_h, const py::handle& mask_h,
                      int64_t stream) {
  const TensorView tokens = to_view(tokens_h, "tokens");
  const TensorView doc_offsets = to_view(doc_offsets_h, "doc_offsets");
  const TensorView doc_chunks = to_view(doc_chunks_h, "doc_chunks");
  const TensorView chunk_doc = to_view(chunk_doc_h, "chunk_doc");
  const TensorView ids = to_view(ids_h, "neighbor_ids");
  const TensorView out = to_view(out_h, "out");
  const TensorView mask = to_view(mask_h, "mask");
  check_device(ids, DeviceType::CUDA);
  PYRETRO_CHECK(tokens.dtype == DType::UInt16 || tokens.dtype == DType::UInt32 || tokens.dtype == DType::Int32 ||
                    tokens.dtype == DType::Int64,
                TypeError, "tokens: expected dtype uint16, uint32, int32 or int64, got ", dtype_name(tokens.dtype));
  for (const TensorView* t : {&tokens, &doc_offsets, &doc_chunks, &chunk_doc}) {
    check_same_device(*t, ids);
    check_ndim(*t, 1);
    check_contig(*t);
    if (t != &tokens) check_dtype(*t, DType::Int64);
  }
  check_dtype(ids, DType::Int64);
  check_contig(ids);
  PYRETRO_CHECK(chunk_len > 0, ValueError, "chunk_len: must be positive, got ", chunk_len);
  PYRETRO_CHECK(r > 0, ValueError, "r: must be positive, got ", r);
  PYRETRO_CHECK(doc_offsets.size(0) >= 1, ValueError, "doc_offsets: must have num_docs + 1 >= 1 entries");
  check_dim(doc_chunks, 0, doc_offsets.size(0));
  PYRETRO_CHECK(ids.ndim + 1 <= kMaxDims, ValueError, "neighbor_ids: too many dimensions");
  for (const TensorView* t : {&out, &mask}) {
    check_same_device(*t, ids);
    bool ok = t->ndim == ids.ndim + 1 && t->size(-1) == r;
    for (int d = 0; ok && d < ids.ndim; ++d) ok = t->shape[d] == ids.shape[d];
    PYRETRO_CHECK(ok, ValueError, t->name, ": expected shape neighbor_ids.shape + (r,) = ", ids.shape_str(),
                  " + (", r, "), got ", t->shape_str());
    check_contig(*t);
  }
  check_dtype(out, DType::Int64);
  check_dtype(mask, DType::Bool);
#ifdef PYRETRO_WITH_CUDA
  gather_neighbors_cuda(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, continuation, pad_id, out,
                        mask, stream);
#else
  throw ValueError("neighbor_ids: is a CUDA tensor but pyretro was built without CUDA");
#endif
}

}  // namespace

void register_gather(py::module_& m) {
  m.def("gather_neighbors", &gather_neighbors, py::arg("tokens"), py::arg("doc_offsets"), py::arg("doc_chunks"),
        py::arg("chunk_doc"), py::arg("neighbor_ids"), py::arg("chunk_len"), py::arg("r"), py::arg("continuation"),
        py::arg("pad_id"), py::arg("out"), py::arg("mask"), py::arg("stream") = 0,
        "Chunk + continuation rows for chunk ids, CUDA (see pyretro.ops.gather_neighbors).");
}

}  // namespace pyretro
