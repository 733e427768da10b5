# Project-wide warning and sanitizer flags, applied to our own targets only.
add_library(spatialsoftmax_flags INTERFACE)
target_compile_options(spatialsoftmax_flags INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion
    -Wno-sign-conversion>
  $<$<BOOL:${SPATIALSOFTMAX_WERROR}>:-Werror>)
if(SPATIALSOFTMAX_SANITIZE)
  target_compile_options(spatialsoftmax_flags INTERFACE
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(spatialsoftmax_flags INTERFACE -fsanitize=address,undefined)
endif()
