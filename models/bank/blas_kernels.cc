#include "models/bank/blas_kernels.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace danet::models {
namespace {

constexpr char kCoreType[] = "OPENBLAS_CORETYPE";
constexpr char kFallback[] = "DANET_OPENBLAS_FALLBACK";

// OpenBLAS's x86 cores whose kernels use nothing wider than AVX (its names, as
// openblas_get_corename gives them): the generic fallbacks and older CPUs' kernels.
constexpr std::string_view kNarrowCores[] = {
    "Katmai", "Coppermine",  "Northwood", "Prescott",  "Banias",     "Atom",         "Core2",
    "Penryn", "Dunnington",  "Nehalem",   "Athlon",    "Opteron",    "Opteron_SSE3", "Barcelona",
    "Nano",   "Sandybridge", "Bobcat",    "Bulldozer", "Piledriver", "Steamroller"};

}  // namespace

VectorIsa CpuVectorIsa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return VectorIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return VectorIsa::kAvx2;
#endif
  return VectorIsa::kNone;
}

bool CpuHasBFloat16Dot() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return false;
#endif
}

std::string PreferredBlasCore(std::string_view openblas_core, VectorIsa cpu) {
  if (cpu == VectorIsa::kNone) return "";
  const std::string core(openblas_core);  // absl's string_view here is not std's
  for (std::string_view narrow : kNarrowCores) {
    if (absl::EqualsIgnoreCase(core, std::string(narrow))) {
      return cpu == VectorIsa::kAvx512 ? "SkylakeX" : "Haswell";
    }
  }
  return "";
}

std::string OpenBlasCore() {
  using CoreName = char* (*)();
  const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (core_name == nullptr) return "";
  const char* name = core_name();
  return name == nullptr ? "" : name;
}

void UseFasterBlasKernels() {
  if (std::getenv(kCoreType) != nullptr) return;
  const std::string detected = OpenBlasCore();
  const std::string preferred = PreferredBlasCore(detected, CpuVectorIsa());
  if (preferred.empty()) return;

  std::ifstream cmdline_file("/proc/self/cmdline", std::ios::binary);
  const std::string cmdline((std::istreambuf_iterator<char>(cmdline_file)),
                            std::istreambuf_iterator<char>());
  if (cmdline.empty()) return;
  // Each argument ends with a NUL, so the last piece is empty.
  std::vector<std::string> args = absl::StrSplit(cmdline, '\0');
  args.pop_back();
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  // The program's own path rather than /proc/self/exe, so that the process keeps its name
  // (the kernel names it after the file executed: ps, top and pgrep would show "exe").
  std::error_code error;
  std::string program = std::filesystem::read_symlink("/proc/self/exe", error).string();
  if (error || access(program.c_str(), X_OK) != 0) program = "/proc/self/exe";

  setenv(kCoreType, preferred.c_str(), 1);
  setenv(kFallback, detected.c_str(), 1);
  std::fflush(nullptr);
  execv(program.c_str(), argv.data());
  unsetenv(kCoreType);  // the exec failed: go on as OpenBLAS chose, and tell no child otherwise
  unsetenv(kFallback);
}

std::string BlasKernelReport() {
  const std::string core = OpenBlasCore();
  if (core.empty()) return "";
  const char* forced = std::getenv(kCoreType);
  const char* fallback = std::getenv(kFallback);
  if (forced == nullptr) return absl::StrCat("OpenBLAS runs its ", core, " kernels (its choice)");
  if (fallback != nullptr && PreferredBlasCore(fallback, CpuVectorIsa()) == forced) {
    return absl::StrCat("OpenBLAS runs its ", core, " kernels: it had chosen its generic ",
                        fallback,
                        " ones on this CPU, which can run these (set OPENBLAS_CORETYPE to keep "
                        "a choice of your own; docs/benchmarks.md, \"OpenBLAS kernels\")");
  }
  return absl::StrCat("OpenBLAS runs its ", core, " kernels (OPENBLAS_CORETYPE=", forced, ")");
}

}  // namespace danet::models
