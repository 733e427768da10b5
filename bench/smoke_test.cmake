# Smoke test of `spatialsoftmax bench` (ctest label cli): a tiny run without
# peers must succeed, print JSON lines with the required fields and draw the
# run (--plot): an SVG with a bar per row of ours. A plot into a folder that
# does not exist fails, naming the file, and leaves nothing.
#   cmake -DCLI=path/to/spatialsoftmax -P bench/smoke_test.cmake
if(NOT CLI)
  message(FATAL_ERROR "pass -DCLI=<spatialsoftmax program>")
endif()
if(NOT WORK)
  set(WORK "${CMAKE_CURRENT_BINARY_DIR}")
endif()
set(plot "${WORK}/bench_smoke_plot.svg")
file(REMOVE "${plot}")
execute_process(
  COMMAND ${CLI} bench --shapes 2x3x8x8,16x10 --threads 1,2 --repeats 1 --min-time 0 --warmup 0
          --memcpy-mib 4 --no-peers --json --plot ${plot}
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc TIMEOUT 60)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "spatialsoftmax bench failed (${rc}):\n${err}\n${out}")
endif()
string(REGEX REPLACE "\n$" "" out "${out}")
string(REPLACE "\n" ";" lines "${out}")
set(memory 0)
set(ours 0)
foreach(line IN LISTS lines)
  foreach(field impl op shape layout threads ms_min ms_median gbps)
    string(JSON value ERROR_VARIABLE json_error GET "${line}" ${field})
    if(json_error)
      message(FATAL_ERROR "line without '${field}' (${json_error}): ${line}")
    endif()
  endforeach()
  string(JSON impl GET "${line}" impl)
  string(JSON gbps GET "${line}" gbps)
  string(JSON ms GET "${line}" ms_min)
  if(NOT ms GREATER 0 OR NOT gbps GREATER 0)
    message(FATAL_ERROR "non-positive time or GB/s: ${line}")
  endif()
  if(impl STREQUAL "memcpy" OR impl STREQUAL "memread")
    math(EXPR memory "${memory} + 1")
  elseif(impl STREQUAL "spatialsoftmax")
    string(JSON pct GET "${line}" pct_memcpy)
    math(EXPR ours "${ours} + 1")
  else()
    message(FATAL_ERROR "unexpected impl '${impl}' with --no-peers: ${line}")
  endif()
endforeach()
# 2 thread counts x (copy, read); 3 cases (2x3x8x8 NCHW and NHWC, 16x10) x 2 ops x 2 thread counts.
if(NOT memory EQUAL 4 OR NOT ours EQUAL 12)
  message(FATAL_ERROR "expected 4 memory rows and 12 spatialsoftmax rows, got ${memory} and ${ours}:\n${out}")
endif()
file(READ "${plot}" svg)
string(REGEX MATCHALL "<title>spatialsoftmax " bars "${svg}")
list(LENGTH bars bar_count)
if(NOT svg MATCHES "^<svg " OR NOT svg MATCHES "</svg>\n$" OR NOT bar_count EQUAL 12)
  message(FATAL_ERROR "--plot: expected an SVG with 12 bars of ours, got ${bar_count}:\n${svg}")
endif()
execute_process(
  COMMAND ${CLI} bench --shapes 2x3x8x8 --threads 1 --repeats 1 --min-time 0 --warmup 0
          --memcpy-mib 4 --no-peers --plot "${WORK}/no_such_folder/plot.svg"
  OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc TIMEOUT 60)
if(rc EQUAL 0 OR NOT err MATCHES "no_such_folder/plot.svg" OR EXISTS "${WORK}/no_such_folder")
  message(FATAL_ERROR "--plot into a missing folder: expected a failure naming it, got ${rc}: ${err}")
endif()
message(STATUS "bench smoke test: ${memory} memory rows, ${ours} spatialsoftmax rows, ${bar_count} bars")
