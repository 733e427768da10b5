// Tensor, TensorView and .npy I/O.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

namespace fs = std::filesystem;

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ss_npy_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_raw(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
  }
  fs::path dir_;
};

TEST(Tensor, DenseStridesAndNumel) {
  const Shape shape{2, 3, 4};
  EXPECT_EQ(contiguous_strides(shape), (Shape{12, 4, 1}));
  EXPECT_EQ(checked_numel(shape, "x"), 24);
  EXPECT_EQ(checked_numel(Shape{}, "x"), 1);
  EXPECT_EQ(checked_numel(Shape{1, 0, std::numeric_limits<std::int64_t>::max()}, "x"), 0);
}

// NumPy's rule: the non-zero dims of an empty shape must multiply within
// int64 too, so that no product taken later overflows (issue 10, item 6).
TEST(Tensor, EmptyShapeWhoseOtherDimsOverflowIsAnError) {
  const std::int64_t big = std::int64_t{1} << 40;
  EXPECT_ERROR_MENTIONS(checked_numel(Shape{0, big, big, big}, "logits"),
                        {"logits", "overflows", "non-zero"});
  EXPECT_ERROR_MENTIONS(checked_numel(Shape{5, 0, std::numeric_limits<std::int64_t>::max()}, "x"),
                        {"overflows"});
  EXPECT_EQ(checked_numel(Shape{0, big, std::int64_t{1} << 20}, "x"), 0);
  const float* none = nullptr;
  const TensorView empty = TensorView::of(none, {0, big, big, big});
  EXPECT_TRUE(empty.is_contiguous());
  EXPECT_ERROR_MENTIONS(empty.numel(), {"overflows"});
  const TensorView huge(none, DType::kFloat32, {big, big, big}, {1, 1, 1});
  EXPECT_FALSE(huge.is_contiguous());
  std::vector<float> logits;
  std::vector<std::int64_t> labels;
  EXPECT_ERROR_MENTIONS(cross_entropy(TensorView::of(logits.data(), {0, big, big, big}),
                                      TensorView::of(labels.data(), {0, big, big})),
                        {"cross_entropy", "overflows"});
}

TEST(Tensor, NumelOverflowIsAnError) {
  const Shape huge{std::int64_t{1} << 40, std::int64_t{1} << 30};
  try {
    checked_numel(huge, "logits");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("logits"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("overflows"), std::string::npos) << e.what();
  }
  EXPECT_THROW(checked_numel(Shape{3, -1}, "x"), Error);
}

TEST(Tensor, StridedViewCopiesInLogicalOrder) {
  // A transposed 2x3 view of a 3x2 buffer.
  const float buf[] = {0, 1, 2, 3, 4, 5};  // rows (0,1), (2,3), (4,5)
  const TensorView t(buf, DType::kFloat32, {2, 3}, {1, 2});
  EXPECT_FALSE(t.is_contiguous());
  const Tensor dense = Tensor::copy_of(t);
  const float want[] = {0, 2, 4, 1, 3, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(dense.data_as<float>()[i], want[i]) << i;
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(dense.data()) % 64, 0u);
}

TEST(Tensor, ConvertsDtypes) {
  const std::int32_t labels[] = {-1, 0, 7};
  const Tensor t = Tensor::copy_of(TensorView::of(labels, {3})).to(DType::kInt64);
  EXPECT_EQ(t.dtype(), DType::kInt64);
  EXPECT_EQ(t.data_as<std::int64_t>()[0], -1);
  EXPECT_EQ(t.data_as<std::int64_t>()[2], 7);
  EXPECT_FALSE(Tensor().defined());
  EXPECT_TRUE(Tensor(DType::kFloat32, {0}).defined());
}

TEST_F(NpyTest, RoundTripsEveryDtypeAndRank) {
  for (DType dtype :
       {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kInt64, DType::kFloat16}) {
    for (const Shape& shape : {Shape{}, Shape{5}, Shape{2, 3}, Shape{2, 0, 3}, Shape{1, 2, 3, 4}}) {
      Tensor t(dtype, shape);
      for (std::int64_t i = 0; i < t.numel(); ++i) {
        switch (dtype) {
          case DType::kFloat32:
            t.data_as<float>()[i] = 0.5f * static_cast<float>(i) - 3;
            break;
          case DType::kFloat64:
            t.data_as<double>()[i] = -1e-300 * static_cast<double>(i);
            break;
          case DType::kInt32:
            t.data_as<std::int32_t>()[i] = -static_cast<std::int32_t>(i);
            break;
          case DType::kInt64:
            t.data_as<std::int64_t>()[i] = (std::int64_t{1} << 40) + i;
            break;
          case DType::kFloat16:
            t.data_as<Float16>()[i] = to_float16(-0.25f * static_cast<float>(i));
            break;
          case DType::kBFloat16:
            break;  // no .npy type: refused (below)
        }
      }
      const fs::path p = dir_ / "t.npy";
      write_npy(p, t);
      // NumPy requires the data to start on a 64-byte boundary.
      EXPECT_EQ(fs::file_size(p) - t.nbytes(), 128u) << shape_string(shape);
      const Tensor back = read_npy(p);
      EXPECT_TRUE(testing::bitwise_equal(t, back)) << shape_string(shape);
    }
  }
  // Only the final file remains: no temporary left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(NpyTest, RefusesBFloat16WhichNumPyLacks) {
  const fs::path p = dir_ / "bf16.npy";
  try {
    write_npy(p, Tensor(DType::kBFloat16, {2}));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bfloat16 has no .npy type"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(NpyTest, ReadsAConformanceFile) {
  const fs::path p = testing::conformance_dir() / "caffe2-spatial" / "c2s_basic" / "X.npy";
  ASSERT_TRUE(fs::exists(p)) << p;
  const Tensor x = read_npy(p);
  EXPECT_EQ(x.dtype(), DType::kFloat32);
  EXPECT_EQ(x.rank(), 4);
}

TEST_F(NpyTest, RejectsMalformedFilesNamingThem) {
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
  auto npy = [](const std::string& h) {
    std::string s = "\x93NUMPY";
    s += '\x01';
    s += '\x00';
    s += static_cast<char>(h.size() & 0xff);
    s += static_cast<char>(h.size() >> 8);
    return s + h;
  };
  struct Bad {
    std::string bytes;
    std::string mentions;
  };
  const Bad cases[] = {
      {"not an npy file", "magic"},
      {npy(header) + std::string(8, '\0'), "bytes"},  // 8 of 16 data bytes
      {npy("{'descr': '<u2', 'fortran_order': False, 'shape': (4,), }"), "descr"},
      {npy("{'descr': '<f4', 'fortran_order': 1, 'shape': (4,), }"), "fortran_order"},
      {npy("{'descr': '<f4', 'fortran_order': False, }"), "shape"},
  };
  int n = 0;
  for (const Bad& bad : cases) {
    const fs::path p = dir_ / ("bad" + std::to_string(n++) + ".npy");
    write_raw(p, bad.bytes);
    try {
      read_npy(p);
      ADD_FAILURE() << "no error for " << p;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p.filename().string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad.mentions), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_npy(dir_ / "missing.npy"), Error);
}

TEST_F(NpyTest, FailedWriteLeavesNothing) {
  const float v[] = {1, 2};
  EXPECT_THROW(write_npy(dir_ / "no_such_dir" / "x.npy", TensorView::of(v, {2})), Error);
  EXPECT_TRUE(fs::is_empty(dir_));
}

}  // namespace
}  // namespace spatialsoftmax
