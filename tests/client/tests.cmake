# client/preview: the PNG encoder (checked against PIL, a second, independent decoder), the
# embedded font and the montage. The PIL check skips cleanly where python3-pil is missing.
find_package(ZLIB REQUIRED)
danet_gtest(preview_test
  SOURCES client/preview_test.cc
  LIBS danet_preview ZLIB::ZLIB absl::status absl::statusor absl::strings)
target_compile_definitions(preview_test PRIVATE
  DANET_PYTHON="${DANET_PYTHON}"
  DANET_PNG_READER="${CMAKE_CURRENT_SOURCE_DIR}/client/test_preview_png.py")
