// Carrier of the shared LibTorch precompiled header (see the top-level CMakeLists.txt).
