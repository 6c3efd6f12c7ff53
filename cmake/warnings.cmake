# One INTERFACE target with the warning flags; every trainbus target links it.
add_library(trainbus_warnings INTERFACE)
target_compile_options(trainbus_warnings INTERFACE -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wold-style-cast
  -Wno-unused-parameter -Wno-missing-field-initializers)
if(TRAINBUS_SANITIZE)
  # GCC 12 reports false maybe-uninitialized warnings inside Boost.Optional (Signals2's group keys)
  # when sanitizers change the inlining.
  target_compile_options(trainbus_warnings INTERFACE -Wno-maybe-uninitialized)
  # Boost.Asio uses std::atomic_thread_fence, which GCC warns ThreadSanitizer does not model.
  if(TRAINBUS_SANITIZE MATCHES "thread")
    target_compile_options(trainbus_warnings INTERFACE -Wno-tsan)
  endif()
endif()
if(TRAINBUS_WERROR)
  target_compile_options(trainbus_warnings INTERFACE -Werror)
endif()

# Adds the precompiled torch header to a torch-heavy target: <torch/torch.h> costs ~28 s per
# translation unit here, ~17 s with the PCH. All such targets reuse one PCH built by trainbus_core.
function(trainbus_use_torch_pch target)
  if(NOT TRAINBUS_PCH)
    return()
  endif()
  target_precompile_headers(${target} REUSE_FROM trainbus_core)
endfunction()
