# tests/models: one suite per models/ component, then the tools as a user meets them.
set(_models ${CMAKE_CURRENT_SOURCE_DIR}/models)

danet_gtest(volume_test
  SOURCES ${_models}/volume/nifti_test.cc ${_models}/volume/brats_test.cc
          ${_models}/volume/normalize_test.cc ${_models}/volume/resample_test.cc
          ${_models}/volume/bias_test.cc
  LIBS danet_volume absl::strings)

if(NOT DANET_ENGINE_ONLY)
  danet_gtest(dicom_test
    SOURCES ${_models}/dicom/dicom_test.cc
    LIBS danet_dicom danet_volume DCMTK::dcmdata PkgConfig::OPENJP2 ZLIB::ZLIB)
endif()

danet_gtest(models_test
  TORCH
  SOURCES ${_models}/nn/networks_test.cc ${_models}/cost/cost_test.cc
          ${_models}/bundle/bundle_test.cc
  LIBS danet_nn danet_cost danet_bundle danet_bank)

# A tiny TorchScript network scripted by Debian's python3-torch (same 1.13 as LibTorch) at
# test time, then loaded into a bank by the C++ test.
set(DANET_TS_DIR ${CMAKE_CURRENT_BINARY_DIR}/torchscript)
add_test(NAME make_torchscript_model
  COMMAND ${DANET_PYTHON} ${_models}/bank/make_torchscript_model.py ${DANET_TS_DIR})
set_tests_properties(make_torchscript_model PROPERTIES FIXTURES_SETUP torchscript_model)
danet_gtest(torchscript_test
  TORCH
  SOURCES ${_models}/bank/torchscript_test.cc
  LIBS danet_bank danet_bundle
  PROPERTIES FIXTURES_REQUIRED torchscript_model
             ENVIRONMENT DANET_TEST_TORCHSCRIPT_DIR=${DANET_TS_DIR})

danet_gtest(engine_test
  TORCH
  SOURCES ${_models}/bank/device_test.cc ${_models}/bank/blas_kernels_test.cc
          ${_models}/engine/preprocess_test.cc
          ${_models}/engine/case_test.cc ${_models}/engine/inplane_test.cc
          ${_models}/engine/router_test.cc
          ${_models}/engine/segmenter_test.cc ${_models}/engine/summary_test.cc
  LIBS danet_engine danet_bank danet_bundle danet_volume)

# UseFasterBlasKernels out of process: the probe runs SetUpProcess and reports its BLAS kernels.
add_executable(blas-probe ${_models}/bank/blas_probe.cc)
target_link_libraries(blas-probe PRIVATE danet_bank danet_warnings)
danet_python_test(blas_kernels MODULE test_blas_kernels DIR ${_models}/bank
  ENVIRONMENT "DANET_BLAS_PROBE=$<TARGET_FILE:blas-probe>")

danet_gtest(data_test
  SOURCES ${_models}/data/phantom_test.cc ${_models}/data/shift_phantom_test.cc
  LIBS danet_data danet_volume)

danet_gtest(metrics_test
  SOURCES ${_models}/eval/metrics_test.cc
  LIBS danet_eval_metrics)

danet_gtest(report_test
  TORCH
  SOURCES ${_models}/eval/report_test.cc
  LIBS danet_eval)

danet_gtest(train_test
  TORCH
  SOURCES ${_models}/train/objectives_test.cc ${_models}/train/augment_test.cc
          ${_models}/train/dataset_test.cc
  LIBS danet_train danet_data danet_engine)

# Our NIfTI code against nibabel, a second independent reader and writer.
danet_python_test(nifti_second_reader MODULE test_nifti_second_reader DIR ${_models}/volume
  ENVIRONMENT "DANET_PHANTOM=$<TARGET_FILE:danet-phantom>"
              "DANET_VOLUME=$<TARGET_FILE:danet-volume>"
              "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/nifti")

# A tiny end-to-end training run (both stages, kill and resume, evaluation), then the trainer's
# other paths on it: about 6.5 minutes alone on the 2-core machine (the tiny run itself about 70 s).
# Not RUN_SERIAL since session 52: it times nothing, and with OMP_WAIT_POLICY=PASSIVE (every test's
# environment) it shares the 2 cores with the unit tests without starving them; the high cost
# makes a fresh build's ctest start it first, so the unit tests fill the other core around it
# (run alone at the end it was the longest stretch of CI with one core idle).
danet_python_test(training_e2e MODULE test_training_e2e DIR ${_models}/train
  TIMEOUT 900
  ENVIRONMENT "DANET_PHANTOM=$<TARGET_FILE:danet-phantom>"
              "DANET_TRAIN=$<TARGET_FILE:danet-train>"
              "DANET_EVAL=$<TARGET_FILE:danet-eval>"
              "DANET_BANK=$<TARGET_FILE:danet-bank>"
              "DANET_SEGMENT=$<TARGET_FILE:danet-segment>"
              "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/training_e2e")

# The command-line tools as a user meets them: danet-bank, and the engine alone (danet-segment)
# with the shipped default bundle.
danet_python_test(danet_bank_cli MODULE test_danet_bank_cli DIR ${_models}/tools
  ENVIRONMENT "DANET_BANK=$<TARGET_FILE:danet-bank>" "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/cli")

danet_python_test(danet_segment_cli MODULE test_danet_segment DIR ${_models}/tools
  TIMEOUT 900
  ENVIRONMENT "DANET_SEGMENT=$<TARGET_FILE:danet-segment>"
              "DANET_PHANTOM=$<TARGET_FILE:danet-phantom>"
              "DANET_BUNDLE=${PROJECT_SOURCE_DIR}/models/bundles/phantom-compact"
              "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}/segment_cli")
# Two to eight minutes on the 2-core machine, and not RUN_SERIAL: a high cost makes a fresh build's
# ctest (no timings recorded yet) start it first, beside the unit tests, not last and alone.
set_tests_properties(danet_segment_cli PROPERTIES COST 1000)
set_tests_properties(training_e2e PROPERTIES COST 2000)

# The PyTorch eager reference of the model benchmark (scripts/bench-eager) builds the networks
# the C++ bank builds: shapes, parameter counts, the shipped state dicts, BatchNorm folding.
danet_python_test(bench_eager_reference MODULE test_bench_eager DIR ${_models}/bench
  TIMEOUT 300
  ENVIRONMENT "DANET_BANK=$<TARGET_FILE:danet-bank>")

# danet-bench-bias: its report, a deterministic checksum, and a clear error for a missing case.
# (The benchmark programs are not built with DANET_BUILD_BENCHMARKS off, as scripts/sanitize
# configures.)
if(DANET_BUILD_BENCHMARKS)
  danet_python_test(bench_bias_tool MODULE test_bench_bias DIR ${_models}/bench
    TIMEOUT 300
    ENVIRONMENT "DANET_BENCH_BIAS=$<TARGET_FILE:danet-bench-bias>"
                "DANET_PHANTOM=$<TARGET_FILE:danet-phantom>"
                "DANET_TMP=${CMAKE_CURRENT_BINARY_DIR}")
endif()
