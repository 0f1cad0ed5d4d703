// Which matrix kernels OpenBLAS runs, and a start-up step that replaces a generic fallback with
// the ones the CPU can run.
//
// OpenBLAS (the BLAS behind Debian's LibTorch: its Linear layers and matrix products, hence
// most of the transformers' time; the convolutions go through oneDNN) picks its kernels once, when
// the library loads, from the CPU's model number. A CPU newer than the library is not in its table:
// Debian 12's OpenBLAS 0.3.21 runs its SSE3 "Prescott" kernels on an Intel Xeon of family 6 model
// 207 that has AVX-512, at 64 GFLOP/s instead of 310 (docs/benchmarks.md, "OpenBLAS kernels").
// OPENBLAS_CORETYPE in the environment overrides the choice, but only before the library loads, so
// a process that wants other kernels must set it and start again.
#ifndef DANET_MODELS_BANK_BLAS_KERNELS_H_
#define DANET_MODELS_BANK_BLAS_KERNELS_H_

#include <string>
#include <string_view>

namespace danet::models {

// The widest x86 vector extension a CPU offers (kAvx512: AVX-512 F, CD, BW, DQ and VL, what
// OpenBLAS's SkylakeX kernels use; kAvx2: AVX2 with FMA, its Haswell kernels).
enum class VectorIsa { kNone, kAvx2, kAvx512 };

// This CPU's (kNone off x86-64).
VectorIsa CpuVectorIsa();

// Whether this CPU has bfloat16 dot products (AVX512-BF16 or AMX-BF16), with which oneDNN runs
// bfloat16 convolutions at about twice the float32 rate; without them it emulates bfloat16 on
// AVX-512 (about 3x slower than float32) and has no bfloat16 convolution on AVX2
// (BankOptions.bfloat16, docs/benchmarks.md "Session 49").
bool CpuHasBFloat16Dot();

// The kernels OpenBLAS should run instead of `openblas_core` (its core name, any case) on a CPU
// offering `cpu`: "SkylakeX" or "Haswell" when `openblas_core` is one of its pre-AVX2 cores
// (Prescott, its generic fallback, Nehalem, Sandybridge, ...) and the CPU has AVX-512 or AVX2;
// empty otherwise. Cores that already use AVX2 or more (Haswell, Zen, SkylakeX and later) and
// names it does not know are kept: choosing between those is left to OpenBLAS, and only the
// fallback was measured.
std::string PreferredBlasCore(std::string_view openblas_core, VectorIsa cpu);

// The core name of the kernels the loaded OpenBLAS runs ("Prescott", "SkylakeX", ...); empty
// when the BLAS in this process is not OpenBLAS.
std::string OpenBlasCore();

// When OPENBLAS_CORETYPE is unset and PreferredBlasCore(OpenBlasCore(), CpuVectorIsa()) names
// other kernels: sets OPENBLAS_CORETYPE to them (and DANET_OPENBLAS_FALLBACK to the core OpenBLAS
// had chosen, for BlasKernelReport) and executes the same program file again with the same
// arguments (/proc/self/exe's target, /proc/self/cmdline); the process keeps its pid, its name,
// open descriptors without close-on-exec and signal mask. Returns when there is nothing to do or
// the exec failed (then the process goes on with OpenBLAS's choice). Call it first in main, once
// the flags are parsed, before any thread or file is made: SetUpProcess does. A user who sets
// OPENBLAS_CORETYPE, to any value, keeps it.
void UseFasterBlasKernels();

// One line for a start-up log: the kernels OpenBLAS runs and who chose them (OpenBLAS,
// OPENBLAS_CORETYPE, or UseFasterBlasKernels in place of a fallback); empty without OpenBLAS.
std::string BlasKernelReport();

}  // namespace danet::models

#endif  // DANET_MODELS_BANK_BLAS_KERNELS_H_
