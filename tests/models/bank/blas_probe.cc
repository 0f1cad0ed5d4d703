// blas-probe: what models/bank/blas_kernels.h leaves a process with. Runs SetUpProcess (which
// may execute the program again with OPENBLAS_CORETYPE set), then prints one JSON object: the
// arguments it ends up with, its pid and name, the OpenBLAS core it runs, what PreferredBlasCore
// would still replace (empty once UseFasterBlasKernels has done its work), and BlasKernelReport.
// test_blas_kernels.py runs it.
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "models/bank/blas_kernels.h"
#include "models/bank/device.h"

namespace {

// The process's name as ps and pgrep see it.
std::string Comm() {
  std::ifstream file("/proc/self/comm");
  std::string name;
  std::getline(file, name);
  return name;
}

}  // namespace

int main(int argc, char** argv) {
  danet::models::SetUpProcess(1);
  const std::string core = danet::models::OpenBlasCore();
  nlohmann::json out = {
      {"args", std::vector<std::string>(argv + 1, argv + argc)},
      {"pid", static_cast<int64_t>(getpid())},
      {"comm", Comm()},
      {"core", core},
      {"still_preferred", danet::models::PreferredBlasCore(core, danet::models::CpuVectorIsa())},
      {"report", danet::models::BlasKernelReport()}};
  std::cout << out.dump() << "\n";
  return 0;
}
