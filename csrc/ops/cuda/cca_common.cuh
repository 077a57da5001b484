// Shared pieces of the portable CUDA CCA kernels (cca_fwd.cu, cca_bwd.cu).
//
// Thread layout (256 threads): "owner" row r = tid / 4 (64 rows per block), slice s = tid % 4. A thread holds
// the D/4 elements d = 16*i + 4*s + e (i < D/16, e < 4) of its row in registers, so a row of a shared
// tile is read as conflict-free float4s and a full dot product is a partial dot + 2 xor-shuffles within the
// 4 lanes of the row. Every thread of a block runs every loop and every shuffle (rows past the end compute
// on zeros and do not write), so __syncthreads and full-mask shuffles are always uniform.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cca.h"

namespace pyretro {
namespace cca_cuda {

constexpr int kThreads = 256;
constexpr int kOwnerRows = 64;  // rows owned per block (query rows in fwd / dq, key rows in dk/dv)
constexpr int kTile = 32;       // rows of a shared-memory tile streamed past the owners
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Params {
  int64_t B, N, H, L, K, R, C;
  float scale;
  bool rotary;
  float theta;
  const void* q; const void* k; const void* v; const uint8_t* mask;
  void* out; float* lse;
  const void* dout; void* dq; void* dk; void* dv;
  const float* bias;  // position bias [H][C][R] or null
  float* dbias;       // its gradient (zero-filled by the caller; atomics) or null
};

// Position bias of query row i (< C) and key j (in K*R) of head h, in the log2 domain; 0 without a bias.
__device__ __forceinline__ float bias2(const Params& p, int64_t h, int64_t i, int64_t j) {
  return p.bias ? p.bias[(h * p.C + i) * p.R + j % p.R] * kLog2e : 0.f;
}

template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

// Element d of row x (D elements) after NeoX rotary at position pos (or plain when !rotary), times mul.
template <int D, class T>
__device__ __forceinline__ float load_rot(const T* x, int d, bool rotary, int64_t pos, float theta, float mul) {
  float val = to_f(x[d]);
  if (rotary) {
    constexpr int half = D / 2;
    const int i = d < half ? d : d - half;
    const float other = to_f(x[d < half ? d + half : d - half]);
    const float inv = powf(theta, -(float(i) * 2.0f) / float(D));
    float sn, cs;
    sincosf(float(pos) * inv, &sn, &cs);
    val = d < half ? val * cs - other * sn : val * cs + other * sn;
  }
  return val * mul;
}

// Gradient w.r.t. the un-rotated element d, given the gradient g (D floats, e.g. in shared memory)
// w.r.t. the rotated row: the transpose of the rotation.
template <int D>
__device__ __forceinline__ float grad_unrot(const float* g, int d, bool rotary, int64_t pos, float theta) {
  if (!rotary) return g[d];
  constexpr int half = D / 2;
  const int i = d < half ? d : d - half;
  const float inv = powf(theta, -(float(i) * 2.0f) / float(D));
  float sn, cs;
  sincosf(float(pos) * inv, &sn, &cs);
  return d < half ? g[d] * cs + g[d + half] * sn : g[d] * cs - g[d - half] * sn;
}

// Element index of the thread's j-th register element (slice s).
template <int D>
__device__ __forceinline__ int slice_elem(int s, int j) {
  return 16 * (j / 4) + 4 * s + (j % 4);
}

// Dot product of the thread's slice x[D/4] with the shared row y (float, 16-byte aligned), over the
// 4 lanes of the row: every lane of the group gets the full sum.
template <int D>
__device__ __forceinline__ float dot_row(const float (&x)[D / 4], const float* y, int s) {
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < D / 16; ++i) {
    const float4 y4 = reinterpret_cast<const float4*>(y)[4 * i + s];
    acc = fmaf(x[4 * i + 0], y4.x, acc);
    acc = fmaf(x[4 * i + 1], y4.y, acc);
    acc = fmaf(x[4 * i + 2], y4.z, acc);
    acc = fmaf(x[4 * i + 3], y4.w, acc);
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  return acc;
}

// acc[D/4] += a * y[slice]
template <int D>
__device__ __forceinline__ void axpy_row(float (&acc)[D / 4], float a, const float* y, int s) {
#pragma unroll
  for (int i = 0; i < D / 16; ++i) {
    const float4 y4 = reinterpret_cast<const float4*>(y)[4 * i + s];
    acc[4 * i + 0] = fmaf(a, y4.x, acc[4 * i + 0]);
    acc[4 * i + 1] = fmaf(a, y4.y, acc[4 * i + 1]);
    acc[4 * i + 2] = fmaf(a, y4.z, acc[4 * i + 2]);
    acc[4 * i + 3] = fmaf(a, y4.w, acc[4 * i + 3]);
  }
}

// Defined in cca_fwd.cu: checks the CUDA-specific limits and fills the kernel parameters.
Params make_params(const CcaDims& d, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& mask, const TensorView& out, const TensorView& lse, const TensorView* bias);

// Experimental tensor-core forward (cca_fwd_tc.cu, variant 1); false when it does not handle the dtype.
bool cca_fwd_tc(const CcaDims& d, const Params& p, DType dtype, cudaStream_t st);

// Makes q's device current for the launch and restores the caller's device afterwards.
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int index) {
    cudaGetDevice(&prev);
    if (index >= 0 && index != prev) cudaSetDevice(index);
  }
  ~DeviceGuard() {
    int now = -1;
    cudaGetDevice(&now);
    if (prev >= 0 && now != prev) cudaSetDevice(prev);
  }
};

inline void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  PYRETRO_CHECK(e == cudaSuccess, ValueError, what, ": CUDA launch failed: ", cudaGetErrorString(e));
}

}  // namespace cca_cuda
}  // namespace pyretro
