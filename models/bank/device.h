// Run-time device and thread selection shared by the tools (the engine never hard-codes a
// device: the same build runs on CPU and, where LibTorch has CUDA, on a GPU).
#ifndef DANET_MODELS_BANK_DEVICE_H_
#define DANET_MODELS_BANK_DEVICE_H_

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace danet::models {

// "cpu", "cuda" or "cuda:N". InvalidArgument for anything else, FailedPrecondition for CUDA on
// a machine (or a LibTorch build) without it.
absl::StatusOr<c10::Device> ParseDevice(const std::string& text);

// LibTorch intra-op threads: `threads` if positive, else every core. (LibTorch's own default
// on these machines is 1.)
void SetThreads(int threads);

// Keeps freed tensor buffers in the heap for reuse instead of handing each back to the kernel
// and faulting its pages in again at the next allocation. On the virtual machines we measured,
// the first write to a fresh 4 KiB page costs 8-13 us: filling a new 143 MB tensor took 0.27 s,
// refilling it 3 ms. glibc's malloc serves blocks from 128 KiB up (its threshold adapts, but
// only up to where a free lowers it again) with mmap and unmaps them on free, so the decision
// pass, which allocates a batch of slices and its feature maps per step, spent most of its time
// in page faults (docs/benchmarks.md, "Page faults"). Sets M_MMAP_THRESHOLD to its largest
// value (32 MiB) and M_TRIM_THRESHOLD to 1 GiB, and M_ARENA_MAX to 1: every thread allocates
// from the one main heap. A thread's own arena grows in 64 MiB heaps and glibc unmaps each
// extra heap as soon as it is wholly free, whatever the trim threshold, so a server's worker
// thread faulted its decision pass in again on every case; with one arena, the server's page
// faults per case fell 3-4x (the per-thread caches still serve small blocks without a lock).
// ReleaseFreeHostMemory gives the kept memory back. Call once at start-up, before other
// threads allocate. glibc on Linux only (elsewhere it does nothing);
// DANET_HOST_MEMORY_DEFAULTS=1 in the environment keeps glibc's defaults, for comparison.
void TuneHostMemory();

// What every binary does first, once its flags are parsed: UseFasterBlasKernels() (which may
// start the program again: models/bank/blas_kernels.h), SetThreads(threads), TuneHostMemory().
void SetUpProcess(int threads);

// Runs `work` on a thread of its own and returns when it is done. For a process whose models
// run on other threads than the main one (the server's workers): do the LibTorch start-up work
// (loading, the warm-up pass) here, not on the main thread. LibTorch's parallel loops run on
// OpenMP, and GNU OpenMP keeps a pool of threads for every thread that has run one, until that
// thread ends. Once the process holds more such threads than cores, every pool's threads sleep
// at once when a parallel region ends instead of spinning briefly, and each of the thousands of
// small regions of a case then waits for the kernel to wake them: on the 2-core machine the
// server's worker ran the decision pass 2x and the bank 1.5x slower after the main thread had
// loaded the bank (docs/benchmarks.md, "One OpenMP pool"). A thread that ends takes its pool with
// it, so the worker's pool is then the only one. `work` must not throw (an exception that leaves
// it ends the process, as on any thread): return its result through what it captures.
void RunOnOwnThread(const std::function<void()>& work);

// Hands the heap's free memory back to the kernel (malloc_trim): for a server that has gone
// idle, so that its resident size falls back after a case.
void ReleaseFreeHostMemory();

// Empty when large host buffers already come in transparent huge pages, else a one-line hint
// for the server's log. A case allocates several buffers larger than malloc will keep (the
// decoded modalities and the slice stack, 36-143 MB each), and with 4 KiB pages each costs
// thousands of faults. With GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the environment (glibc
// 2.35+) malloc advises its mappings as huge pages: over gRPC the default policy's decode went
// from 0.5-0.6 s to 0.17 s per case and its time per case fell by about 40% (docs/benchmarks.md,
// "Page faults"). Empty when the tunable is set, when the kernel gives huge pages to every
// mapping (transparent_hugepage "always") or to none ("never"), and outside Linux.
std::string HugePageHint();

// The one mapping of a LibTorch error to a Status: out of memory (CPU allocator or CUDA) is
// ResourceExhausted (the caller may retry with less in flight), anything else Internal (a bug
// or a broken model, not the client's input). `context` says what was being done.
absl::Status TorchErrorStatus(const c10::Error& error, const std::string& context);

}  // namespace danet::models

#endif  // DANET_MODELS_BANK_DEVICE_H_
