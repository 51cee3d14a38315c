#!/usr/bin/env bash
# Builds stand-in CUDA libraries (no GPU, no CUDA toolkit needed) so that onnxruntime's CUDA execution provider
# can be LOADED and a session CREATED on a machine without a GPU: partitioning and kernel lookup run for real
# (that is code in libonnxruntime_providers_cuda.so), while every CUDA call the provider makes lands in a stub
# that "succeeds" on the host. Kernels never run; nothing computed through these stubs means anything.
#
#   bash bench/cuda-placement/make-stubs.sh [PROVIDER_DIR] [OUT_DIR]
#     PROVIDER_DIR  folder holding libonnxruntime_providers_cuda.so (default $CUDA_PROVIDER_DIR or
#                   /tmp/provx/package/Plugins/Linux/x64 = the npm package com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9)
#     OUT_DIR       where the stub libraries go (default $CUDA_STUB_DIR or /tmp/cuda-stubs)
#
# How: the provider's DT_NEEDED entries (readelf -d) give the CUDA sonames (libcudart.so.13, libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libcuda.so.1); `nm -D --undefined-only` gives every symbol it imports
# with its version node (e.g. cudaMalloc@libcudart.so.13). For each soname we compile one shared library with
# that SONAME, a version script that puts each imported symbol under its version node, a weak
# `int f(void) { return 0; }` for every imported symbol (0 = cudaSuccess / CUBLAS_STATUS_SUCCESS; with
# CUDA_STUB_TRACE=1 in the environment each such call prints its name on stderr), and
# strong host implementations (stub-impl.c below, written from the public API documentation: no NVIDIA
# header or code) for the calls whose outputs the provider reads: device count and properties, memory
# (host malloc/memcpy/memset), handle/stream/event creation (non-null dummies), error strings.
set -euo pipefail
PROVIDER_DIR=${1:-${CUDA_PROVIDER_DIR:-/tmp/provx/package/Plugins/Linux/x64}}
OUT_DIR=${2:-${CUDA_STUB_DIR:-/tmp/cuda-stubs}}
PROVIDER="$PROVIDER_DIR/libonnxruntime_providers_cuda.so"
[ -f "$PROVIDER" ] || { echo "make-stubs: $PROVIDER not found (npm pack com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 and unpack it)" >&2; exit 2; }
for tool in gcc nm readelf; do command -v "$tool" >/dev/null || { echo "make-stubs: $tool is needed" >&2; exit 2; }; done
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- the hand-written host implementations (strong symbols; only those the provider imports are exported) ----
cat >"$WORK/stub-impl.c" <<'EOF'
/* Host stand-ins for the CUDA runtime / cuBLAS / cuBLASLt calls whose results the ONNX Runtime CUDA provider
 * uses while a session is created. Signatures follow the public CUDA documentation; every type is spelled
 * with plain C types here (handles are opaque pointers, enums are int). */
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <stdint.h>

#define OK 0
static char dummy_objects[4096];
static int next_dummy = 0;
/* A distinct non-null address for each created handle / stream / event. */
static void *dummy(void) { next_dummy = (next_dummy + 8) % 4096; return &dummy_objects[next_dummy]; }
static int return_zero(void) { return 0; }

/* ---- device ---- */
int cudaGetDeviceCount(int *count) { *count = 1; return OK; }
int cudaGetDevice(int *device) { *device = 0; return OK; }
int cudaSetDevice(int device) { return device == 0 ? OK : 101 /* cudaErrorInvalidDevice */; }
int cudaDriverGetVersion(int *v) { *v = 13000; return OK; }
int cudaRuntimeGetVersion(int *v) { *v = 13000; return OK; }
int cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
  *free_bytes = (size_t)140 << 30; *total_bytes = (size_t)141 << 30; return OK;
}
/* cudaDeviceProp, first members (public docs; identical offsets in CUDA 12 and 13 up to `minor`):
 *   0 char name[256] | 256 uuid (16 bytes) | 272 char luid[8] | 280 unsigned luidDeviceNodeMask |
 *   288 size_t totalGlobalMem | 296 size_t sharedMemPerBlock | 304 int regsPerBlock | 308 int warpSize |
 *   312 size_t memPitch | 320 int maxThreadsPerBlock | 324 int maxThreadsDim[3] | 336 int maxGridSize[3] |
 *   (348: int clockRate in CUDA 12, padding in CUDA 13) | 352 size_t totalConstMem | 360 int major | 364 int minor |
 *   368 size_t textureAlignment | 376 size_t texturePitchAlignment | then ints (multiProcessorCount is the first
 *   or second of them depending on the version: both get 132).
 * Only the first 512 bytes are written: the real struct is larger in both versions. */
int cudaGetDeviceProperties(void *prop, int device) {
  (void)device;
  unsigned char *p = (unsigned char *)prop;
  memset(p, 0, 512);
  strcpy((char *)p, "Stub GPU (host stand-in, sm_90)");
  *(size_t *)(p + 288) = (size_t)141 << 30;
  *(size_t *)(p + 296) = 48 * 1024;
  *(int *)(p + 304) = 65536;
  *(int *)(p + 308) = 32;
  *(size_t *)(p + 312) = (size_t)2147483647;
  *(int *)(p + 320) = 1024;
  ((int *)(p + 324))[0] = 1024; ((int *)(p + 324))[1] = 1024; ((int *)(p + 324))[2] = 64;
  ((int *)(p + 336))[0] = 2147483647; ((int *)(p + 336))[1] = 65535; ((int *)(p + 336))[2] = 65535;
  *(int *)(p + 348) = 1980000;
  *(size_t *)(p + 352) = 65536;
  *(int *)(p + 360) = 9;
  *(int *)(p + 364) = 0;
  *(size_t *)(p + 368) = 512;
  *(size_t *)(p + 376) = 32;
  *(int *)(p + 384) = 132;
  *(int *)(p + 388) = 132;
  return OK;
}
/* cudaDeviceAttr numbers from the public enum: 1 maxThreadsPerBlock, 2-4 maxBlockDim, 5-7 maxGridDim,
 * 8 maxSharedMemoryPerBlock, 10 warpSize, 16 multiProcessorCount, 75/76 compute capability,
 * 81 maxSharedMemoryPerMultiprocessor, 97 maxSharedMemoryPerBlockOptin. */
int cudaDeviceGetAttribute(int *value, int attr, int device) {
  (void)device;
  switch (attr) {
    case 1: *value = 1024; break;
    case 2: case 3: *value = 1024; break;
    case 4: *value = 64; break;
    case 5: *value = 2147483647; break;
    case 6: case 7: *value = 65535; break;
    case 8: *value = 49152; break;
    case 10: *value = 32; break;
    case 16: *value = 132; break;
    case 75: *value = 9; break;
    case 76: *value = 0; break;
    case 81: *value = 233472; break;
    case 97: *value = 232448; break;
    default: *value = 1; break;
  }
  return OK;
}
int cudaDeviceSynchronize(void) { return OK; }
int cudaGetLastError(void) { return OK; }
int cudaPeekAtLastError(void) { return OK; }
const char *cudaGetErrorName(int e) { return e == 0 ? "cudaSuccess" : "cudaErrorStub"; }
const char *cudaGetErrorString(int e) { return e == 0 ? "no error" : "error from the CUDA stub library"; }

/* ---- memory: host memory stands in for device memory ---- */
int cudaMalloc(void **p, size_t n) { *p = calloc(1, n ? n : 1); return *p ? OK : 2 /* cudaErrorMemoryAllocation */; }
int cudaFree(void *p) { free(p); return OK; }
int cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
int cudaHostAlloc(void **p, size_t n, unsigned flags) { (void)flags; return cudaMalloc(p, n); }
int cudaFreeHost(void *p) { free(p); return OK; }
int cudaMallocFromPoolAsync(void **p, size_t n, void *pool, void *stream) { (void)pool; (void)stream; return cudaMalloc(p, n); }
int cudaFreeAsync(void *p, void *stream) { (void)stream; free(p); return OK; }
int cudaMemcpy(void *d, const void *s, size_t n, int kind) { (void)kind; if (n) memmove(d, s, n); return OK; }
int cudaMemcpyAsync(void *d, const void *s, size_t n, int kind, void *stream) { (void)stream; return cudaMemcpy(d, s, n, kind); }
int cudaMemcpy2DAsync(void *d, size_t dpitch, const void *s, size_t spitch, size_t width, size_t height, int kind, void *stream) {
  (void)kind; (void)stream;
  for (size_t r = 0; r < height; r++) memmove((char *)d + r * dpitch, (const char *)s + r * spitch, width);
  return OK;
}
int cudaMemcpyFromSymbol(void *d, const void *symbol, size_t n, size_t offset, int kind) { (void)kind; memmove(d, (const char *)symbol + offset, n); return OK; }
int cudaMemset(void *p, int v, size_t n) { memset(p, v, n); return OK; }
int cudaMemsetAsync(void *p, int v, size_t n, void *stream) { (void)stream; memset(p, v, n); return OK; }
int cudaMemPoolCreate(void **pool, const void *props) { (void)props; *pool = dummy(); return OK; }

/* ---- streams, events, graphs, modules ---- */
int cudaStreamCreate(void **s) { *s = dummy(); return OK; }
int cudaStreamCreateWithFlags(void **s, unsigned flags) { (void)flags; *s = dummy(); return OK; }
int cudaStreamIsCapturing(void *s, int *status) { (void)s; *status = 0; return OK; }
int cudaEventCreate(void **e) { *e = dummy(); return OK; }
int cudaEventCreateWithFlags(void **e, unsigned flags) { (void)flags; *e = dummy(); return OK; }
int cudaEventElapsedTime(float *ms, void *a, void *b) { (void)a; (void)b; *ms = 0.0f; return OK; }
int cudaStreamEndCapture(void *s, void **graph) { (void)s; *graph = dummy(); return OK; }
int cudaGraphInstantiate(void **exec, void *graph, unsigned long long flags) { (void)graph; (void)flags; *exec = dummy(); return OK; }
int cudaLibraryLoadData(void **lib, const void *code, void *a, void *b, unsigned c, void *d, void *e, unsigned f) {
  (void)code; (void)a; (void)b; (void)c; (void)d; (void)e; (void)f; *lib = dummy(); return OK;
}
int cudaLibraryGetKernel(void **k, void *lib, const char *name) { (void)lib; (void)name; *k = dummy(); return OK; }
int __cudaGetKernel(void **k, const void *entry) { (void)entry; *k = dummy(); return OK; }
int cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, const void *f, int bs, size_t smem, unsigned flags) {
  (void)f; (void)bs; (void)smem; (void)flags; *n = 1; return OK;
}
/* Driver entry points: every driver function resolves to one that returns 0 (CUDA_SUCCESS). */
int cudaGetDriverEntryPointByVersion(const char *sym, void **fn, unsigned ver, unsigned long long flags, int *status) {
  (void)sym; (void)ver; (void)flags; *fn = (void *)return_zero; if (status) *status = 0; return OK;
}

/* ---- fat binary registration (runs at load time from the provider's static constructors) ---- */
static void *fatbin_handle[4];
void **__cudaRegisterFatBinary(void *fatbin) { (void)fatbin; return fatbin_handle; }

/* ---- cuBLAS / cuBLASLt ---- */
int cublasCreate_v2(void **h) { *h = dummy(); return OK; }
int cublasGetMathMode(void *h, int *mode) { (void)h; *mode = 0; return OK; }
const char *cublasGetStatusName(int s) { return s == 0 ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_STUB"; }
const char *cublasGetStatusString(int s) { return s == 0 ? "success" : "error from the cuBLAS stub library"; }
int cublasLtCreate(void **h) { *h = dummy(); return OK; }
int cublasLtMatmulDescCreate(void **d, int compute, int scale) { (void)compute; (void)scale; *d = dummy(); return OK; }
int cublasLtMatrixLayoutCreate(void **l, int type, uint64_t rows, uint64_t cols, int64_t ld) { (void)type; (void)rows; (void)cols; (void)ld; *l = dummy(); return OK; }
int cublasLtMatmulPreferenceCreate(void **p) { *p = dummy(); return OK; }
int cublasLtMatrixTransformDescCreate(void **d, int scale) { (void)scale; *d = dummy(); return OK; }
EOF

# --- per-library symbol lists, from the provider itself -----------------------------------------------------
mapfile -t NEEDED < <(readelf -d "$PROVIDER" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -E '^lib(cu|nv)')
[ "${#NEEDED[@]}" -gt 0 ] || { echo "make-stubs: no CUDA libraries among the DT_NEEDED entries of $PROVIDER" >&2; exit 2; }
nm -D --undefined-only "$PROVIDER" | awk '{print $NF}' | grep '@' >"$WORK/imports.txt" || true
total=0
for soname in "${NEEDED[@]}"; do
  syms=$(sed -n "s/^\([A-Za-z_][A-Za-z0-9_]*\)@${soname//./\\.}\$/\1/p" "$WORK/imports.txt" | sort -u)
  n=$(printf '%s' "$syms" | grep -c . || true)
  total=$((total + n))
  base="$WORK/${soname}"
  {
    echo "/* generated by make-stubs.sh: $n symbols of $soname imported by $(basename "$PROVIDER") */"
    echo "#include <stdio.h>"
    echo "#include <stdlib.h>"
    echo "/* CUDA_STUB_TRACE=1: each call of a generic stub prints its name on stderr. */"
    echo "static int stub_trace(const char *name) { static int on = -1; if (on < 0) on = getenv(\"CUDA_STUB_TRACE\") != NULL; if (on) fprintf(stderr, \"cuda-stub: %s\\n\", name); return 0; }"
    for s in $syms; do echo "__attribute__((weak)) int $s(void) { return stub_trace(\"$s\"); }"; done
  } >"$base.c"
  if [ "$n" -gt 0 ]; then
    { echo "$soname {"; echo "  global:"; for s in $syms; do echo "    $s;"; done; echo "  local: *;"; echo "};"; } >"$base.map"
  else
    { echo "$soname {"; echo "  local: *;"; echo "};"; } >"$base.map"
  fi
  gcc -shared -fPIC -O1 -w -o "$OUT_DIR/$soname" -Wl,-soname,"$soname" -Wl,--version-script="$base.map" "$base.c" "$WORK/stub-impl.c"
  echo "make-stubs: $OUT_DIR/$soname ($n symbols)"
done
echo "make-stubs: $total symbols in ${#NEEDED[@]} libraries; use LD_LIBRARY_PATH=$OUT_DIR"
