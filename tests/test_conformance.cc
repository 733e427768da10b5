// Every conformance case under conformance_dir(), each its own test: run the
// case's operator through the case runner and compare every expected output
// with the reference at the conformance README's tolerances. Plus malformed
// cases, which must raise Error naming the culprit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "cli/case_runner.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

namespace fs = std::filesystem;

// The README lists 168 cases in five folders.
constexpr std::size_t kExpectedCases = 168;

// Folders holding case.json, sorted so that test order is stable.
std::vector<fs::path> discover_cases() {
  std::vector<fs::path> dirs;
  std::error_code ec;
  if (!fs::is_directory(conformance_dir(), ec)) return dirs;
  for (const auto& entry : fs::recursive_directory_iterator(conformance_dir(), ec)) {
    if (entry.is_regular_file() && entry.path().filename() == "case.json") {
      dirs.push_back(entry.path().parent_path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// "onnx-sce/test_sce_mean" -> "onnx_sce_test_sce_mean" (gtest allows only
// [A-Za-z0-9_] in parameter names).
std::string test_name(const ::testing::TestParamInfo<fs::path>& info) {
  std::string name = fs::relative(info.param, conformance_dir()).generic_string();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

TEST(ConformanceSuite, HoldsEveryCase) {
  ASSERT_TRUE(fs::is_directory(conformance_dir()))
      << "conformance folder missing: " << conformance_dir();
  EXPECT_GE(discover_cases().size(), kExpectedCases) << "in " << conformance_dir();
}

class ConformanceCase : public ::testing::TestWithParam<fs::path> {};

TEST_P(ConformanceCase, MatchesReference) {
  const cases::Case c = cases::load_case(GetParam());
  const std::map<std::string, Tensor> got = cases::run_case(c);
  const std::vector<std::string> expected = cases::expected_outputs(c);
  ASSERT_FALSE(expected.empty()) << c.dir << " declares no outputs";
  for (const std::string& name : expected) {
    SCOPED_TRACE(c.dir.string() + ": " + name);
    const auto it = got.find(name);
    ASSERT_NE(it, got.end()) << "the runner did not produce output " << name;
    // The peer's own array (float32) fixes the dtype; NAME_f64 the values.
    if (c.declared.contains(name)) {
      EXPECT_EQ(dtype_name(it->second.dtype()), dtype_name(c.declared.at(name).dtype));
    }
    const std::string reference = cases::reference_name(c, name);
    const Tensor want = cases::read_array(c, reference);
    const Tolerance tol = conformance_tolerance(c.op, name, want);
    std::string why;
    EXPECT_TRUE(all_close(it->second, want, tol.rtol, tol.atol, &why))
        << name << " against " << reference << ": " << why;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ConformanceCase, ::testing::ValuesIn(discover_cases()), test_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ConformanceCase);

// --- the cases in bfloat16 ----------------------------------------------------

// The cases of operators with 16-bit kernels (all but the spatial soft-argmax).
std::vector<fs::path> cases_with_16_bit_kernels() {
  std::vector<fs::path> dirs;
  for (const fs::path& dir : discover_cases()) {
    if (cases::load_case(dir).op != "spatial_soft_argmax") dirs.push_back(dir);
  }
  return dirs;
}

// Every float input rounded to bfloat16 and run through the fast path,
// against the float64 reference run on the same rounded values (the case's
// expected arrays are for the unrounded inputs). Tolerance: the type's
// precision, relative to each value and to the output's largest one (a
// gradient from a rounded P carries P's rounding into its small entries).
class ConformanceCaseBFloat16 : public ::testing::TestWithParam<fs::path> {};

TEST_P(ConformanceCaseBFloat16, MatchesTheReferenceOnTheRoundedInputs) {
  cases::Case rounded = cases::load_case(GetParam());
  cases::Case widened = cases::load_case(GetParam());
  for (auto& [name, array] : rounded.arrays) {
    if (!is_floating(array.dtype())) continue;
    array = array.to(DType::kBFloat16);
    widened.arrays[name] = array.to(DType::kFloat64);
  }
  const std::map<std::string, Tensor> got = cases::run_case(rounded);
  std::map<std::string, Tensor> want;
  {
    const ScopedBackend reference("reference");
    want = cases::run_case(widened);
  }
  constexpr double kUnit = 0x1p-8;  // bfloat16's relative precision
  for (const std::string& name : cases::expected_outputs(rounded)) {
    SCOPED_TRACE(rounded.dir.string() + ": " + name);
    ASSERT_TRUE(got.contains(name) && want.contains(name)) << name;
    EXPECT_EQ(got.at(name).dtype(), DType::kBFloat16);
    std::string why;
    const TensorView w = want.at(name).view();
    EXPECT_TRUE(all_close(got.at(name).view(), w, 2 * kUnit, 2 * kUnit * max_abs(w), &why))
        << name << ": " << why;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ConformanceCaseBFloat16,
                         ::testing::ValuesIn(cases_with_16_bit_kernels()), test_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ConformanceCaseBFloat16);

// --- malformed cases -------------------------------------------------------

// A copy of a real case in a fresh temporary folder, removed afterwards.
class MalformedCase : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("ss_conformance_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    const fs::path source = conformance_dir() / "torch-ce" / "ce_nchw_mean_weight_ii";
    ASSERT_TRUE(fs::is_directory(source)) << source;
    fs::create_directories(dir_);
    fs::copy(source, dir_, fs::copy_options::recursive);
    ASSERT_NO_THROW(cases::load_case(dir_));  // the untouched copy is valid
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  nlohmann::json read_json() const {
    std::ifstream in(dir_ / "case.json");
    return nlohmann::json::parse(in);
  }
  void write_json(const nlohmann::json& doc) const {
    std::ofstream(dir_ / "case.json") << doc.dump(1);
  }
  void write_file(const std::string& name, const std::string& bytes) const {
    std::ofstream(dir_ / name, std::ios::binary) << bytes;
  }

  // load_case (then run_case, if loading passed) must throw Error whose
  // message names the case folder and every string in `culprits`.
  void expect_error(std::initializer_list<std::string> culprits) const {
    std::string message;
    try {
      const cases::Case c = cases::load_case(dir_);
      cases::run_case(c);
      ADD_FAILURE() << "no Error for " << dir_;
      return;
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_NE(message.find(dir_.string()), std::string::npos) << message;
    for (const std::string& culprit : culprits) {
      EXPECT_NE(message.find(culprit), std::string::npos)
          << "'" << culprit << "' not in: " << message;
    }
  }

  fs::path dir_;
};

TEST_F(MalformedCase, UnknownOp) {
  nlohmann::json doc = read_json();
  doc["op"] = "softmax_cross_entropy_v9";
  write_json(doc);
  expect_error({"softmax_cross_entropy_v9"});
}

TEST_F(MalformedCase, UnknownAttribute) {
  nlohmann::json doc = read_json();
  doc["attributes"]["label_smothing"] = 0.1;
  write_json(doc);
  expect_error({"label_smothing"});
}

TEST_F(MalformedCase, AttributeOfWrongType) {
  nlohmann::json doc = read_json();
  doc["attributes"]["ignore_index"] = "1";
  write_json(doc);
  expect_error({"ignore_index"});
}

TEST_F(MalformedCase, IntegerAttributeGivenAsFloat) {
  nlohmann::json doc = read_json();
  doc["attributes"]["ignore_index"] = 1.0;
  write_json(doc);
  expect_error({"ignore_index"});
}

TEST_F(MalformedCase, UnknownAttributeValue) {
  nlohmann::json doc = read_json();
  doc["attributes"]["reduction"] = "average";
  write_json(doc);
  expect_error({"reduction", "average"});
}

TEST_F(MalformedCase, MissingNpy) {
  fs::remove(dir_ / "target.npy");
  expect_error({"target.npy"});
}

TEST_F(MalformedCase, BadNpyHeader) {
  // A well-framed header whose dtype does not exist.
  const std::string header = "{'descr': '<q9', 'fortran_order': False, 'shape': (2,), }\n";
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\0';
  bytes += static_cast<char>(header.size());
  bytes += '\0';
  write_file("input.npy", bytes + header + std::string(16, '\0'));
  expect_error({"input.npy"});
}

TEST_F(MalformedCase, NpyShapeDiffersFromDeclaration) {
  nlohmann::json doc = read_json();
  doc["arrays"]["weight"]["shape"] = {4};
  write_json(doc);
  expect_error({"weight.npy"});
}

TEST_F(MalformedCase, MissingCaseJson) {
  fs::remove(dir_ / "case.json");
  expect_error({"case.json"});
}

TEST_F(MalformedCase, InvalidJson) {
  write_file("case.json", "{\"name\": \"x\", \"op\": ");
  expect_error({"case.json"});
}

TEST_F(MalformedCase, RequiredInputNotDeclared) {
  nlohmann::json doc = read_json();
  doc["arrays"].erase("target");
  write_json(doc);
  expect_error({"target"});
}

TEST_F(MalformedCase, TargetsAttributeContradictsDtype) {
  nlohmann::json doc = read_json();
  doc["attributes"]["targets"] = "probabilities";
  write_json(doc);
  expect_error({"targets"});
}

// The library's own rejection (a label out of range) comes back prefixed with
// the case folder.
TEST_F(MalformedCase, LibraryErrorNamesTheCase) {
  nlohmann::json doc = read_json();
  doc["attributes"].erase("ignore_index");  // label 1 stays valid, so break one
  write_json(doc);
  const Tensor target = read_npy(dir_ / "target.npy");
  Tensor bad = Tensor::copy_of(target);
  bad.data_as<std::int64_t>()[3] = 99;
  write_npy(dir_ / "target.npy", bad);
  expect_error({"99"});
}

}  // namespace
}  // namespace spatialsoftmax::testing
