// CPU chunked cross-attention: argument checks (shared with CUDA), ISA dispatch, threading, rotary tables.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "ops/cca.h"
#include "ops/cpu/cca_cpu_task.h"
#include "pyretro/parallel.h"

namespace pyretro {

CcaDims cca_check(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& mask,
                  const TensorView* out, const TensorView* lse, int64_t chunk_len, double scale, bool rotary,
                  double theta, const TensorView* bias) {
  PYRETRO_CHECK(chunk_len > 0, ValueError, "chunk_len must be > 0, got ", chunk_len);
  check_ndim(q, 4);
  check_ndim(k, 6);
  check_ndim(v, 6);
  check_ndim(mask, 4);
  CcaDims d;
  d.B = q.size(0); d.N = q.size(1); d.H = q.size(2); d.D = q.size(3);
  d.C = chunk_len;
  d.L = (d.N + chunk_len - 1) / chunk_len;
  d.K = k.size(2); d.R = k.size(3); d.G = k.size(4);
  d.scale = scale; d.rotary = rotary; d.theta = theta;
  PYRETRO_CHECK(d.G > 0 ? d.H % d.G == 0 : d.H == 0, ValueError, k.name, ": ", d.G,
                " key/value heads do not divide the ", d.H, " query heads of ", q.name);
  const int64_t kshape[6] = {d.B, d.L, d.K, d.R, d.G, d.D};
  for (int i = 0; i < 6; ++i) {
    check_dim(k, i, kshape[i]);
    check_dim(v, i, kshape[i]);
  }
  for (int i = 0; i < 4; ++i) check_dim(mask, i, kshape[i]);
  PYRETRO_CHECK(d.D > 0 && d.D <= cca_cpu::kMaxD, ValueError, q.name, ": head dim must be in [1, ", cca_cpu::kMaxD,
                "], got ", d.D);
  PYRETRO_CHECK(!rotary || d.D % 2 == 0, ValueError, q.name, ": rotary needs an even head dim, got ", d.D);
  PYRETRO_CHECK(d.K * d.R <= (int64_t(1) << 30), ValueError, k.name, ": too many keys per chunk");
  PYRETRO_CHECK(q.dtype == DType::Float32 || q.dtype == DType::Float64 || q.dtype == DType::BFloat16 ||
                    q.dtype == DType::Float16,
                TypeError, q.name, ": dtype must be float32, float64, bfloat16 or float16, got ", dtype_name(q.dtype));
  check_dtype(k, q.dtype);
  check_dtype(v, q.dtype);
  check_dtype(mask, DType::Bool);
  const TensorView* all[] = {&q, &k, &v, &mask, out, lse};
  for (const TensorView* t : all) {
    if (!t) continue;
    check_contiguous(*t);
    check_same_device(q, *t);
  }
  if (out) {
    check_dtype(*out, q.dtype);
    check_ndim(*out, 4);
    for (int i = 0; i < 4; ++i) check_dim(*out, i, q.size(i));
  }
  if (lse) {
    check_dtype(*lse, q.dtype == DType::Float64 ? DType::Float64 : DType::Float32);
    check_ndim(*lse, 3);
    check_dim(*lse, 0, d.B);
    check_dim(*lse, 1, d.N);
    check_dim(*lse, 2, d.H);
  }
  PYRETRO_CHECK(std::isfinite(scale), ValueError, "scale must be finite");
  PYRETRO_CHECK(std::isfinite(theta) && theta > 0, ValueError, "rope_theta must be finite and > 0");
  if (bias) cca_check_bias(d, q, *bias);
  return d;
}

void cca_check_bias(const CcaDims& d, const TensorView& q, const TensorView& bias) {
  check_ndim(bias, 3);
  check_dim(bias, 0, d.H);
  check_dim(bias, 1, d.C);
  check_dim(bias, 2, d.R);
  check_dtype(bias, q.dtype == DType::Float64 ? DType::Float64 : DType::Float32);
  check_contiguous(bias);
  check_same_device(q, bias);
}

namespace {

using cca_cpu::Storage;
using cca_cpu::TaskArgs;

enum class Isa { Generic, Avx2, Avx512 };

// PYRETRO_CCA_CPU_ISA=generic|avx2|avx512 forces a variant (tests use it to cover every path);
// otherwise the widest one the CPU supports.
Isa pick_isa() {
  const char* env = std::getenv("PYRETRO_CCA_CPU_ISA");
  const std::string want = env ? env : "";
  if (want == "generic") return Isa::Generic;
  if (want == "avx2") return cca_cpu::avx2::available() ? Isa::Avx2 : Isa::Generic;
  if (cca_cpu::avx512::available() && (want.empty() || want == "avx512")) return Isa::Avx512;
  if (cca_cpu::avx2::available()) return Isa::Avx2;
  return Isa::Generic;
}

struct RopeTables {
  std::vector<float> f;
  std::vector<double> d;
};

// cos/sin [P][D/2] of pos * theta^(-2i/D), in float32 (float64 for float64 inputs) like the reference.
void build_rope(const CcaDims& dm, bool f64, RopeTables& rt, TaskArgs& a) {
  const int64_t half = dm.D / 2, P = std::max(dm.C, dm.R);
  if (f64) {
    rt.d.resize(2 * P * half);
    for (int64_t i = 0; i < half; ++i) {
      const double inv = std::pow(dm.theta, -(double(i) * 2.0) / double(dm.D));
      for (int64_t p = 0; p < P; ++p) {
        rt.d[p * half + i] = std::cos(double(p) * inv);
        rt.d[P * half + p * half + i] = std::sin(double(p) * inv);
      }
    }
    a.rope_cos = rt.d.data();
    a.rope_sin = rt.d.data() + P * half;
  } else {
    rt.f.resize(2 * P * half);
    for (int64_t i = 0; i < half; ++i) {
      const float inv = std::pow(float(dm.theta), -(float(i) * 2.0f) / float(dm.D));
      for (int64_t p = 0; p < P; ++p) {
        const float ang = float(p) * inv;
        rt.f[p * half + i] = std::cos(ang);
        rt.f[P * half + p * half + i] = std::sin(ang);
      }
    }
    a.rope_cos = rt.f.data();
    a.rope_sin = rt.f.data() + P * half;
  }
}

Storage storage_of(DType t) {
  switch (t) {
    case DType::Float64: return Storage::F64;
    case DType::BFloat16: return Storage::BF16;
    case DType::Float16: return Storage::F16;
    default: return Storage::F32;
  }
}

TaskArgs make_args(const CcaDims& d, const TensorView& q) {
  TaskArgs a{};
  a.B = d.B; a.N = d.N; a.H = d.H; a.D = d.D; a.L = d.L; a.K = d.K; a.R = d.R; a.C = d.C;
  a.G = d.G > 0 ? d.G : 1;
  a.Dp = cca_cpu::round_up(d.D, cca_cpu::kDPad);
  a.scale = d.scale;
  a.rotary = d.rotary;
  a.st = storage_of(q.dtype);
  return a;
}

void run(const TaskArgs& args, bool bwd) {
  // Forward: a task per (b, chunk, query head). Backward: per (b, chunk, kv head), so the query heads that
  // share a kv head accumulate its dK/dV in one task (no races, no reduction pass). The position bias's
  // gradient is shared by every task: each thread sums into its own buffer, added up under a lock.
  const int64_t tasks = args.B * args.L * (bwd ? args.G : args.H);
  if (args.H == 0) return;
  if (tasks == 0) return;
  const Isa isa = pick_isa();
  const int64_t bytes = cca_cpu::scratch_bytes(args, bwd);
  const bool f64 = args.st == Storage::F64;
  const int64_t nbias = args.H * args.C * args.R;
  std::mutex dbias_lock;
  parallel_for(tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<char> scratch(static_cast<size_t>(bytes));
    TaskArgs a = args;
    std::vector<float> dbf;
    std::vector<double> dbd;
    if (bwd && args.dbias) {
      if (f64) dbd.assign(static_cast<size_t>(nbias), 0.0), a.dbias = dbd.data();
      else dbf.assign(static_cast<size_t>(nbias), 0.0f), a.dbias = dbf.data();
    }
    switch (isa) {
      case Isa::Avx512:
        bwd ? cca_cpu::avx512::bwd_tasks(a, begin, end, scratch.data())
            : cca_cpu::avx512::fwd_tasks(a, begin, end, scratch.data());
        break;
      case Isa::Avx2:
        bwd ? cca_cpu::avx2::bwd_tasks(a, begin, end, scratch.data())
            : cca_cpu::avx2::fwd_tasks(a, begin, end, scratch.data());
        break;
      case Isa::Generic:
        bwd ? cca_cpu::generic::bwd_tasks(a, begin, end, scratch.data())
            : cca_cpu::generic::fwd_tasks(a, begin, end, scratch.data());
        break;
    }
    if (bwd && args.dbias) {
      std::lock_guard<std::mutex> g(dbias_lock);
      if (f64)
        for (int64_t e = 0; e < nbias; ++e) static_cast<double*>(args.dbias)[e] += dbd[e];
      else
        for (int64_t e = 0; e < nbias; ++e) static_cast<float*>(args.dbias)[e] += dbf[e];
    }
  });
}

}  // namespace

const char* cca_cpu_isa() {
  switch (pick_isa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "generic";
  }
}

void cca_fwd_cpu(const CcaDims& d, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& mask, const TensorView& out, const TensorView& lse, const TensorView* bias) {
  check_device(q, DeviceType::CPU);
  TaskArgs a = make_args(d, q);
  a.q = q.data; a.k = k.data; a.v = v.data; a.mask = static_cast<const uint8_t*>(mask.data);
  a.out = out.data; a.lse = lse.data;
  a.bias = bias ? bias->data : nullptr;
  RopeTables rt;
  if (d.rotary) build_rope(d, a.st == Storage::F64, rt, a);
  run(a, false);
}

void cca_bwd_cpu(const CcaDims& d, const TensorView& dout, const TensorView& q, const TensorView& k,
                 const TensorView& v, const TensorView& mask, const TensorView& out, const TensorView& lse,
                 const TensorView& dq, const TensorView& dk, const TensorView& dv, const TensorView* bias,
                 const TensorView* dbias) {
  check_device(q, DeviceType::CPU);
  TaskArgs a = make_args(d, q);
  a.q = q.data; a.k = k.data; a.v = v.data; a.mask = static_cast<const uint8_t*>(mask.data);
  a.out = out.data; a.lse = lse.data;
  a.dout = dout.data; a.dq = dq.data; a.dk = dk.data; a.dv = dv.data;
  a.bias = bias ? bias->data : nullptr;
  if (dbias) {
    a.dbias = dbias->data;
    std::memset(dbias->data, 0, size_t(d.H * d.C * d.R) * (a.st == Storage::F64 ? 8 : 4));
  }
  RopeTables rt;
  if (d.rotary) build_rope(d, a.st == Storage::F64, rt, a);
  run(a, true);
}

}  // namespace pyretro
