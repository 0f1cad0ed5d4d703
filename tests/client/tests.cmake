# tests/client: the preview images in-process, the PACS bridge out-of-process.
set(_client ${CMAKE_CURRENT_SOURCE_DIR}/client)

# client/preview: PNG encoding with libpng (read back by libpng's reader and by PIL, a second,
# independent decoder), the embedded font and the montage. The PIL check skips cleanly where python3-pil is missing.
danet_gtest(preview_test
  SOURCES ${_client}/preview/preview_test.cc
  LIBS danet_preview PNG::PNG absl::status absl::statusor absl::strings)
target_compile_definitions(preview_test PRIVATE
  DANET_PYTHON="${DANET_PYTHON}"
  DANET_PNG_READER="${_client}/preview/test_preview_png.py")

# client/pacs: danet-pacs-bridge out-of-process between a real Orthanc (the PACS, on loopback)
# and danet-server: a study pushed from Orthanc comes back as a DICOM SEG in the same study
# (dciodvfy, pydicom), the server down at first (retried, then delivered), a bad study kept under
# failed/, SIGTERM. Prints a LATENCY line (bridge vs. the danet CLI).
danet_python_e2e(pacs_bridge_e2e test_pacs_bridge ${_client}/pacs 600)
