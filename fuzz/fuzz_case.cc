// libFuzzer harness: the conformance-case reader (load_case) on an arbitrary
// case.json, then run_case on what loads.
//
// Each process makes folders of fixed small .npy inputs (the names the case
// operators take; the seed cases in corpus/fuzz_case declare exactly these
// shapes and dtypes) and writes each input as their case.json. The inputs
// are tiny, so run_case is cheap whatever the attributes say.
//
// A spatialsoftmax::Error is the reader or the operator rejecting the case,
// which is right; anything else escaping, a crash, a sanitizer report, a
// timeout or running out of memory is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "cli/case_runner.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/npy.h"

namespace {

namespace fs = std::filesystem;
namespace ss = spatialsoftmax;

// Three folders that differ in `target` and `grad_output`: class indices and
// a per-position upstream gradient (cross_entropy with index targets,
// reduction none, NLL); probabilities and an upstream gradient of the
// logits' shape (probability targets, kl_div, softmax, log_softmax); and an
// upstream gradient of keypoints (spatial_soft_argmax). Each input runs in
// all three, so a case fits one of them whichever op it names.
fs::path g_dirs[3];
// FUZZ_CASE_VERBOSE=1: print what each input did (to check the seeds:
// build/fuzz/fuzz_case fuzz/corpus/fuzz_case/*).
const bool g_verbose = std::getenv("FUZZ_CASE_VERBOSE") != nullptr;

template <typename T>
void put(const fs::path& dir, const char* name, std::vector<T> values, ss::Shape shape) {
  ss::write_npy(dir / (std::string(name) + ".npy"),
                ss::TensorView::of(std::span<const T>(values), std::move(shape)));
}

void remove_dirs() {
  for (const fs::path& dir : g_dirs) {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
}

fs::path make_dir() {
  std::string pattern = (fs::temp_directory_path() / "fuzz_case.XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  return pattern;
}

void run(const fs::path& dir, const std::uint8_t* data, std::size_t size) {
  {
    std::ofstream out(dir / "case.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) std::abort();  // the harness's own failure, not the reader's
  }
  try {
    const ss::cases::Case c = ss::cases::load_case(dir);
    ss::cases::run_case(c);
    if (g_verbose) std::fprintf(stderr, "%s: ran\n", dir.c_str());
  } catch (const ss::Error& e) {
    if (g_verbose) std::fprintf(stderr, "%s\n", e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Folders per process: scripts/fuzz.sh runs several harnesses at once.
  for (fs::path& dir : g_dirs) dir = make_dir();
  std::atexit(remove_dirs);
  // 2 x 3 x 2 x 2 logits: (N, C, d1, d2) for the losses, (N, C, H, W) for
  // the spatial soft-argmax; labels (N, d1, d2) in [0, 3), T with one -1.
  const std::vector<float> logits = {0.5f, -1.f, 2.f,  0.f,  1.f, 3.f,  -2.f,  0.25f,
                                     -.5f, 1.5f, 0.f,  4.f,  2.f, -3.f, 1.f,   0.75f,
                                     0.f,  1.f,  -1.f, 2.5f, 3.f, 0.5f, -0.5f, 1.f};
  std::vector<float> probabilities(24);
  for (std::size_t n = 0; n < 2; ++n) {
    for (std::size_t k = 0; k < 3; ++k) {
      for (std::size_t p = 0; p < 4; ++p)
        probabilities[(n * 3 + k) * 4 + p] = static_cast<float>(k + 1) / 6.f;
    }
  }
  const std::vector<float> per_position = {1.f, 0.5f, 2.f, 0.f, 1.f, 1.5f, 0.25f, 1.f};
  const std::vector<std::int64_t> labels = {0, 1, 2, 1, 2, 0, 0, 1};
  for (const fs::path& dir : g_dirs) {
    put(dir, "input", logits, {2, 3, 2, 2});
    put(dir, "weight", std::vector<float>{1.f, 2.f, 0.5f}, {3});
    put(dir, "scores", logits, {2, 3, 2, 2});
    put(dir, "labels", labels, {2, 2, 2});
    put(dir, "weights", std::vector<float>{1.f, 2.f, 0.5f}, {3});
    put(dir, "X", logits, {2, 3, 2, 2});
    put(dir, "T", std::vector<std::int32_t>{0, 1, 2, -1, 2, 0, 0, 1}, {2, 2, 2});
    put(dir, "weight_tensor", per_position, {2, 2, 2});
    put(dir, "d_avg_loss", std::vector<float>{1.f}, {});
  }
  put(g_dirs[0], "target", labels, {2, 2, 2});
  put(g_dirs[0], "grad_output", per_position, {2, 2, 2});
  put(g_dirs[1], "target", probabilities, {2, 3, 2, 2});
  put(g_dirs[1], "grad_output", logits, {2, 3, 2, 2});
  put(g_dirs[2], "target", labels, {2, 2, 2});
  put(g_dirs[2], "grad_output", std::vector<float>(logits.begin(), logits.begin() + 12), {2, 3, 2});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  for (const fs::path& dir : g_dirs) run(dir, data, size);
  return 0;
}
