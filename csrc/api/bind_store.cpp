// Bindings of the chunk store core: _C.store_gather (used by ChunkStore.gather and by the CPU path of
// pyretro.ops.gather_neighbors). Arguments are view tuples from pyretro._tensor.view.
#include <pybind11/pybind11.h>

#include "api/pyconv.h"
#include "api/registry.h"
#include "store/gather.h"

namespace pyretro {
namespace {

void check_cpu_1d_int64(const TensorView& t) {
  check_device(t, DeviceType::CPU);
  check_ndim(t, 1);
  check_dtype(t, DType::Int64);
  check_contiguous(t);
}

void store_gather(const py::handle& tokens_h, const py::handle& doc_offsets_h, const py::handle& doc_chunks_h,
                  const py::handle& chunk_doc_h, const py::handle& ids_h, int64_t chunk_len, int64_t r,
                  const py::handle& out_h, const py::handle& mask_h, int64_t pad_id, bool continuation) {
  TensorView tokens = to_view(tokens_h, "tokens");
  TensorView doc_offsets = to_view(doc_offsets_h, "doc_offsets");
  TensorView doc_chunks = to_view(doc_chunks_h, "doc_chunks");
  TensorView chunk_doc = to_view(chunk_doc_h, "chunk_doc");
  TensorView ids = to_view(ids_h, "neighbor_ids");
  TensorView out = to_view(out_h, "out");
  const bool has_mask = !mask_h.is_none();
  TensorView mask = has_mask ? to_view(mask_h, "out_mask") : TensorView{};

  check_device(tokens, DeviceType::CPU);
  check_ndim(tokens, 1);
  check_contiguous(tokens);
  for (const TensorView* t : {&doc_offsets, &doc_chunks, &chunk_doc}) check_cpu_1d_int64(*t);
  check_device(ids, DeviceType::CPU);
  check_dtype(ids, DType::Int64);
  check_contiguous(ids);
  PYRETRO_CHECK(chunk_len > 0, ValueError, "chunk_len: must be positive, got ", chunk_len);
  PYRETRO_CHECK(r > 0, ValueError, "r: must be positive, got ", r);
  const int64_t num_docs = doc_offsets.size(0) - 1;
  PYRETRO_CHECK(num_docs >= 0, ValueError, "doc_offsets: must have num_docs + 1 >= 1 entries");
  check_dim(doc_chunks, 0, num_docs + 1);

  // out (and mask): contiguous CPU, shape ids.shape + (r,).
  PYRETRO_CHECK(ids.ndim + 1 <= kMaxDims, ValueError, "neighbor_ids: too many dimensions");
  for (const TensorView* t : {&out, has_mask ? &mask : nullptr}) {
    if (!t) continue;
    check_device(*t, DeviceType::CPU);
    bool ok = t->ndim == ids.ndim + 1 && t->size(-1) == r;
    for (int d = 0; ok && d < ids.ndim; ++d) ok = t->shape[d] == ids.shape[d];
    PYRETRO_CHECK(ok, ValueError, t->name, ": expected shape neighbor_ids.shape + (r,) = ", ids.shape_str(),
                  " + (", r, "), got ", t->shape_str());
    check_contiguous(*t);
  }
  if (has_mask) check_dtype(mask, DType::Bool);
  PYRETRO_CHECK(out.dtype == DType::Int64 || out.dtype == DType::Int32, TypeError,
                "out: expected dtype int64 or int32, got ", dtype_name(out.dtype));

  py::gil_scoped_release release;
  store::gather_chunks_cpu(tokens.data, tokens.dtype, tokens.numel(), doc_offsets.ptr<int64_t>(),
                           doc_chunks.ptr<int64_t>(), num_docs, chunk_doc.ptr<int64_t>(), chunk_doc.numel(),
                           ids.ptr<int64_t>(), ids.numel(), chunk_len, r, continuation, out.data, out.dtype,
                           has_mask ? mask.ptr<bool>() : nullptr, pad_id);
}

}  // namespace

void register_store(pybind11::module_& m) {
  m.def("store_gather", &store_gather, py::arg("tokens"), py::arg("doc_offsets"), py::arg("doc_chunks"),
        py::arg("chunk_doc"), py::arg("neighbor_ids"), py::arg("chunk_len"), py::arg("r"), py::arg("out"),
        py::arg("out_mask"), py::arg("pad_id") = 0, py::arg("continuation") = true,
        "Chunk + continuation rows for chunk ids (CPU). All arguments are view tuples except the ints; "
        "out_mask may be None. See docs/store.md.");
}

}  // namespace pyretro
