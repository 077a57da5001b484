// Host simulation of the CUDA rope and gather kernels (tests/test_cuda_sim.py builds and runs this).
//
// The kernels' per-thread bodies (csrc/ops/cuda/*_kernel.cuh) take their thread/block indices as arguments,
// so here every thread of the exact launch the .cu files would make (same vector width, block and grid
// shape; a small SM count forces the grid-stride loops) runs sequentially on the CPU. Results are compared
// with the CPU kernels (rope_cpu, store::gather_chunks_cpu) on random shapes, layouts, strides, dtypes and
// ids. This checks indexing, vector widths and pass-through handling without a GPU; it cannot check
// device-only behaviour (sincosf accuracy, launch errors, streams), which the @cuda tests do.
// Prints one line per failure and "OK <cases>" at the end; exit status 1 on any failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "ops/cpu/half_convert.h"
#include "ops/cuda/gather_kernel.cuh"
#include "ops/cuda/rope_kernel.cuh"
#include "ops/rope.h"
#include "store/gather.h"

using namespace pyretro;

static int failures = 0, cases = 0;
static int vec_seen[2][9] = {};  // [interleaved][vec]: coverage of the vector widths
static std::mt19937_64 rng(1234);

static int64_t rnd(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

// ---- rope ------------------------------------------------------------------------------------------------
template <class T, class P, int VEC>
void simulate_rope(const RopeArgs& ra) {
  rope_kernel::KernelArgs ka = rope_kernel::make_args(ra);
  const rope_kernel::LaunchShape ls = rope_kernel::plan(ka, ra.xs[0].shape[3], VEC, /*sm_count=*/1);
  // Cap the grid so rows are revisited by the grid-stride loop even for small inputs.
  const int64_t grid = std::min<int64_t>(ls.grid, 3);
  for (int64_t b = 0; b < grid; ++b)
    for (int64_t ty = 0; ty < ls.by; ++ty)
      for (int64_t tx = 0; tx < ls.bx; ++tx)
        rope_kernel::rope_thread<T, P, VEC>(ka, rope_kernel::ThreadIndex{tx, ty, b, ls.bx, ls.by, grid});
}

template <class T, class P>
int simulate_rope_vec(const RopeArgs& ra) {
  const int vec = rope_kernel::pick_vec<T>(ra);
  switch (vec) {
    case 8: simulate_rope<T, P, 8>(ra); break;
    case 4: simulate_rope<T, P, 4>(ra); break;
    case 2: simulate_rope<T, P, 2>(ra); break;
    default: simulate_rope<T, P, 1>(ra); break;
  }
  return vec;
}

template <class T> double as_double(const void* p, int64_t i);
template <> double as_double<float>(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
template <> double as_double<double>(const void* p, int64_t i) { return static_cast<const double*>(p)[i]; }
template <> double as_double<__half>(const void* p, int64_t i) {
  return to_float(Half{static_cast<const uint16_t*>(p)[i]});
}
template <> double as_double<__nv_bfloat16>(const void* p, int64_t i) {
  return to_float(BFloat16{static_cast<const uint16_t*>(p)[i]});
}

template <class T> void fill(void* p, int64_t i, double v);
template <> void fill<float>(void* p, int64_t i, double v) { static_cast<float*>(p)[i] = static_cast<float>(v); }
template <> void fill<double>(void* p, int64_t i, double v) { static_cast<double*>(p)[i] = v; }
template <> void fill<__half>(void* p, int64_t i, double v) {
  static_cast<uint16_t*>(p)[i] = to_half(static_cast<float>(v)).bits;
}
template <> void fill<__nv_bfloat16>(void* p, int64_t i, double v) {
  static_cast<uint16_t*>(p)[i] = to_bf16(static_cast<float>(v)).bits;
}

template <class T> double tol();
template <> double tol<float>() { return 4e-7; }
template <> double tol<double>() { return 1e-14; }
template <> double tol<__half>() { return 1.0 / 1024; }
template <> double tol<__nv_bfloat16>() { return 1.0 / 128; }

struct Buf {  // a strided [B, S, H, D] tensor inside a larger sentinel-filled buffer
  std::vector<unsigned char> mem;
  size_t base = 0;  // byte offset of the region [base, base + n elements) inside mem
  int64_t n = 0;
  TensorView v;
  const void* region() const { return mem.data() + base; }
};

template <class T>
Buf make_buf(int64_t B, int64_t S, int64_t H, int64_t D, int64_t pad_h, int64_t pad_s, int64_t offset,
             DType dt, const char* name) {
  Buf b;
  const int64_t sh = D + pad_h, ss = H * sh + pad_s, sb = S * ss;
  const int64_t n = offset + B * sb + 16;
  b.mem.assign(static_cast<size_t>(n * sizeof(T)) + 64, 0);
  // 64-byte aligned region start
  uintptr_t base = reinterpret_cast<uintptr_t>(b.mem.data());
  base = (base + 63) & ~static_cast<uintptr_t>(63);
  b.base = base - reinterpret_cast<uintptr_t>(b.mem.data());
  b.n = n;
  void* data = reinterpret_cast<void*>(base);
  for (int64_t i = 0; i < n; ++i) fill<T>(data, i, 777.0);  // sentinel everywhere
  b.v.data = static_cast<T*>(data) + offset;
  b.v.dtype = dt;
  b.v.device = DeviceType::CPU;
  b.v.ndim = 4;
  const int64_t shape[4] = {B, S, H, D}, stride[4] = {sb, ss, sh, 1};
  for (int d = 0; d < 4; ++d) {
    b.v.shape[d] = shape[d];
    b.v.stride[d] = stride[d];
  }
  b.v.name = name;
  return b;
}

template <class T>
void rope_case(DType dt) {
  const bool interleaved = rnd(0, 1);
  static const int64_t dims[][2] = {{32, 32}, {64, 64}, {64, 32}, {80, 80}, {80, 16}, {128, 64}, {128, 128},
                                    {16, 6}, {10, 4}, {8, 2}};
  const auto& dr = dims[rnd(0, 9)];
  const int64_t D = dr[0], R = dr[1];
  const int64_t B = rnd(1, 3), S = rnd(1, 40), H = rnd(1, 5), Hk = rnd(1, 3);
  const bool two = rnd(0, 1), inplace = rnd(0, 2) == 0, batch_pos = rnd(0, 1), pos32 = rnd(0, 1);
  const bool aligned = rnd(0, 2) != 0;  // unaligned strides/offsets force smaller vectors
  const int64_t pad_h = aligned ? 8 * rnd(0, 1) : rnd(0, 3), pad_s = aligned ? 8 * rnd(0, 2) : rnd(0, 5);
  const int64_t off = aligned ? 0 : rnd(0, 3);
  const int64_t Bp = batch_pos ? B : 1;

  std::vector<int64_t> pos64(Bp * S);
  std::vector<int32_t> pos32v(Bp * S);
  for (int64_t i = 0; i < Bp * S; ++i) {
    pos64[i] = rnd(0, 5) == 0 ? rnd(-200000, 200000) : rnd(0, 4096);
    pos32v[i] = static_cast<int32_t>(pos64[i]);
  }
  TensorView pos;
  pos.data = pos32 ? static_cast<void*>(pos32v.data()) : static_cast<void*>(pos64.data());
  pos.dtype = pos32 ? DType::Int32 : DType::Int64;
  pos.ndim = 2;
  pos.shape[0] = Bp;
  pos.shape[1] = S;
  pos.stride[0] = S;
  pos.stride[1] = 1;
  pos.name = "positions";

  const int nt = two ? 2 : 1;
  const int64_t heads[2] = {H, Hk};
  std::vector<Buf> xin, out_cpu, out_sim;
  for (int j = 0; j < nt; ++j) {
    xin.push_back(make_buf<T>(B, S, heads[j], D, pad_h, pad_s, off, dt, j ? "k" : "x"));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t h = 0; h < heads[j]; ++h)
          for (int64_t d = 0; d < D; ++d)
            fill<T>(xin[j].v.data, b * xin[j].v.stride[0] + s * xin[j].v.stride[1] + h * xin[j].v.stride[2] + d,
                    std::normal_distribution<double>(0, 1)(rng));
    if (inplace) {
      out_cpu.push_back(xin[j]);  // copies of the whole buffer: same layout, own memory
      out_sim.push_back(xin[j]);
    } else {
      out_cpu.push_back(make_buf<T>(B, S, heads[j], D, pad_h, pad_s, off, dt, "out"));
      out_sim.push_back(make_buf<T>(B, S, heads[j], D, pad_h, pad_s, off, dt, "out"));
    }
  }
  // Copies of a Buf keep pointing into the source's memory: re-point views into their own vectors.
  auto repoint = [&](Buf& dst, const Buf& src) {
    const auto off_bytes = static_cast<const unsigned char*>(src.v.data) - src.mem.data();
    dst.v.data = dst.mem.data() + off_bytes;
  };
  for (int j = 0; j < nt; ++j) {
    if (inplace) {
      repoint(out_cpu[j], xin[j]);
      repoint(out_sim[j], xin[j]);
    }
  }
  RopeArgs cpu, sim;
  for (int j = 0; j < nt; ++j) {
    cpu.xs.push_back(inplace ? out_cpu[j].v : xin[j].v);
    cpu.outs.push_back(out_cpu[j].v);
    sim.xs.push_back(inplace ? out_sim[j].v : xin[j].v);
    sim.outs.push_back(out_sim[j].v);
  }
  cpu.positions = sim.positions = pos;
  cpu.p.theta = sim.p.theta = rnd(0, 1) ? 10000.0 : 500000.0;
  cpu.p.rotary_dim = sim.p.rotary_dim = R;
  cpu.p.interleaved = sim.p.interleaved = interleaved;
  cpu.p.inverse = sim.p.inverse = rnd(0, 1);
  validate_rope(sim);
  rope_cpu(cpu);
  int vec = 0;
  if (pos32) vec = simulate_rope_vec<T, int32_t>(sim);
  else vec = simulate_rope_vec<T, int64_t>(sim);

  ++cases;
  ++vec_seen[interleaved][vec];
  for (int j = 0; j < nt; ++j) {
    // compare the whole region (view and gaps): gaps must keep the sentinel in both
    const void* a = out_cpu[j].region();
    const void* b = out_sim[j].region();
    const int64_t n = out_cpu[j].n;
    for (int64_t i = 0; i < n; ++i) {
      const double va = as_double<T>(a, i), vb = as_double<T>(b, i);
      if (!(std::fabs(va - vb) <= tol<T>() * std::max(1.0, std::fabs(va)))) {
        std::printf("rope mismatch: dtype=%s D=%ld R=%ld interleaved=%d inplace=%d two=%d j=%d B=%ld S=%ld H=%ld "
                    "vec=%d aligned=%d elem=%ld cpu=%.9g sim=%.9g\n",
                    dtype_name(xin[0].v.dtype), (long)D, (long)R, interleaved, inplace, two, j, (long)B, (long)S,
                    (long)heads[j], vec, aligned, (long)i, va, vb);
        ++failures;
        return;
      }
    }
  }
}

// ---- gather ----------------------------------------------------------------------------------------------
template <class T>
void gather_case(DType dt) {
  const int64_t chunk_len = rnd(1, 9), ndocs = rnd(1, 12);
  std::vector<int64_t> doc_offsets{0}, doc_chunks{0}, chunk_doc;
  for (int64_t d = 0; d < ndocs; ++d) {
    const int64_t len = rnd(0, 4) == 0 ? chunk_len * rnd(1, 3) : rnd(1, 40);
    const int64_t nch = (len + chunk_len - 1) / chunk_len;
    doc_offsets.push_back(doc_offsets.back() + len);
    doc_chunks.push_back(doc_chunks.back() + nch);
    for (int64_t c = 0; c < nch; ++c) chunk_doc.push_back(d);
  }
  const int64_t T_ = doc_offsets.back(), C = static_cast<int64_t>(chunk_doc.size());
  std::vector<T> tokens(T_);
  for (auto& t : tokens) t = static_cast<T>(rnd(0, 60000));
  const int64_t n = rnd(0, 70), r = rnd(1, 50);
  const bool continuation = rnd(0, 1);
  std::vector<int64_t> ids(n);
  for (auto& id : ids) id = rnd(-1, C - 1);
  std::vector<int64_t> out_cpu(n * r), out_sim(n * r, 123);
  std::vector<char> m_cpu(n * r), m_sim(n * r, 2);
  store::gather_chunks_cpu(tokens.data(), dt, T_, doc_offsets.data(), doc_chunks.data(), ndocs, chunk_doc.data(),
                           C, ids.data(), n, chunk_len, r, continuation, out_cpu.data(), DType::Int64,
                           reinterpret_cast<bool*>(m_cpu.data()), -3);
  gather_kernel::Args a{tokens.data(), T_, doc_offsets.data(), doc_chunks.data(), ndocs, chunk_doc.data(), C,
                        ids.data(), n, chunk_len, r, continuation, -3, out_sim.data(),
                        reinterpret_cast<bool*>(m_sim.data())};
  const int64_t grid = std::min<int64_t>(std::max<int64_t>(1, (n + 7) / 8), 2);  // forces the row loop
  for (int64_t b = 0; b < grid; ++b)
    for (int64_t t = 0; t < gather_kernel::kWarpsPerBlock * 32; ++t) gather_kernel::gather_thread<T>(a, t, b, grid);
  ++cases;
  if (out_cpu != out_sim || m_cpu != m_sim) {
    std::printf("gather mismatch: dtype=%s chunk_len=%ld r=%ld n=%ld continuation=%d\n", dtype_name(dt),
                (long)chunk_len, (long)r, (long)n, continuation);
    ++failures;
  }
  // Out-of-range ids (unchecked on device): padded rows, never an out-of-bounds read.
  if (n > 0) {
    ids[0] = C + rnd(0, 5);
    ids[n - 1] = -rnd(2, 9);
    gather_kernel::gather_thread<T>(a, 0, 0, 1);
    for (int64_t t = 1; t < 32; ++t) gather_kernel::gather_thread<T>(a, t, 0, 1);
    bool ok = true;
    for (int64_t t = 0; t < r; ++t) ok = ok && out_sim[t] == -3 && !m_sim[t];
    if (!ok) {
      std::printf("gather: out-of-range id not padded\n");
      ++failures;
    }
  }
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 200;
  for (int it = 0; it < iters; ++it) {
    rope_case<float>(DType::Float32);
    rope_case<double>(DType::Float64);
    rope_case<__half>(DType::Float16);
    rope_case<__nv_bfloat16>(DType::BFloat16);
    gather_case<uint16_t>(DType::UInt16);
    gather_case<uint32_t>(DType::UInt32);
    gather_case<int32_t>(DType::Int32);
    gather_case<int64_t>(DType::Int64);
  }
  for (int il = 0; il < 2; ++il)
    for (int v : {1, 2, 4, 8})
      if (!vec_seen[il][v]) {
        std::printf("coverage: vector width %d (interleaved=%d) never exercised\n", v, il);
        ++failures;
      }
  if (failures) {
    std::printf("FAILED %d of %d cases\n", failures, cases);
    return 1;
  }
  std::printf("OK %d cases\n", cases);
  return 0;
}
