# Project-wide warning and sanitizer flags, applied to our own targets only.
add_library(spatialsoftmax_flags INTERFACE)
# C++ only: nvcc takes its own flags (src/CMakeLists.txt).
target_compile_options(spatialsoftmax_flags INTERFACE
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU,Clang>>:-Wall -Wextra -Wpedantic
    -Wshadow -Wconversion -Wno-sign-conversion>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${SPATIALSOFTMAX_WERROR}>>:-Werror>)

# One sanitizer set per build (they do not all combine):
#   address  AddressSanitizer + UndefinedBehaviorSanitizer (the debug preset)
#   thread   ThreadSanitizer (the tsan preset)
#   fuzzer   address + undefined plus libFuzzer's coverage instrumentation
#            (clang only; the fuzz preset). Harnesses add -fsanitize=fuzzer
#            at link time themselves (fuzz/CMakeLists.txt), so the library and
#            anything else linked here stays free of libFuzzer's main().
# SPATIALSOFTMAX_SANITIZE=ON is the older spelling of "address".
set(SPATIALSOFTMAX_SANITIZER "" CACHE STRING "Sanitizer set: empty, address, thread or fuzzer")
set_property(CACHE SPATIALSOFTMAX_SANITIZER PROPERTY STRINGS "" address thread fuzzer)
if(SPATIALSOFTMAX_SANITIZE AND SPATIALSOFTMAX_SANITIZER STREQUAL "")
  set(SPATIALSOFTMAX_SANITIZER address)
endif()

if(SPATIALSOFTMAX_SANITIZER STREQUAL "address")
  set(sanitize_compile -fsanitize=address,undefined)
  set(sanitize_link -fsanitize=address,undefined)
elseif(SPATIALSOFTMAX_SANITIZER STREQUAL "thread")
  set(sanitize_compile -fsanitize=thread)
  set(sanitize_link -fsanitize=thread)
elseif(SPATIALSOFTMAX_SANITIZER STREQUAL "fuzzer")
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SPATIALSOFTMAX_SANITIZER=fuzzer needs clang (libFuzzer)")
  endif()
  set(sanitize_compile -fsanitize=fuzzer-no-link,address,undefined)
  set(sanitize_link -fsanitize=address,undefined)
elseif(NOT SPATIALSOFTMAX_SANITIZER STREQUAL "")
  message(FATAL_ERROR "SPATIALSOFTMAX_SANITIZER='${SPATIALSOFTMAX_SANITIZER}': "
    "expected empty, address, thread or fuzzer")
endif()
if(sanitize_compile)
  # -fno-sanitize-recover: a UBSan report stops the program, so tests and
  # fuzzers fail on it instead of printing and going on.
  target_compile_options(spatialsoftmax_flags INTERFACE
    ${sanitize_compile} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(spatialsoftmax_flags INTERFACE ${sanitize_link})
endif()
