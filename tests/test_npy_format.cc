// The .npy reader and writer against hostile and unusual files (issue 10,
// items 1, 3, 7 and 8): what NumPy reads is read the same way, the rest is an
// error naming the file and the key, never a crash, a huge allocation or a
// silent misreading.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

namespace fs = std::filesystem;

// A .npy file: magic, version, little-endian header length, header, data.
std::string npy_bytes(const std::string& header, const std::string& data = "", int major = 1) {
  std::string s = "\x93NUMPY";
  s += static_cast<char>(major);
  s += '\0';
  const std::size_t n = header.size();
  const int length_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < length_bytes; ++i) s += static_cast<char>((n >> (8 * i)) & 0xff);
  return s + header + data;
}

std::string f32_data(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

Tensor read_bytes(const std::string& bytes) {
  std::istringstream in(bytes);
  return read_npy(in, "case.npy");
}

std::string header_with_shape(const std::string& shape) {
  return "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }\n";
}

TEST(NpyFormat, ReadsWhatNumpyReads) {
  const std::string six = f32_data({0, 1, 2, 3, 4, 5});
  for (const std::string& header : {
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }") +
               std::string(4, ' ') + "\n",
           std::string("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}"),
           std::string("{ 'shape' : ( 2 , 3 , ) ,\n 'fortran_order':False,'descr':'<f4' }\n"),
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}\t\r\n"),
       }) {
    const Tensor t = read_bytes(npy_bytes(header, six));
    EXPECT_EQ(t.shape(), (Shape{2, 3})) << header;
    EXPECT_EQ(t.at(5), 5.0) << header;
  }
  EXPECT_EQ(
      read_bytes(npy_bytes(header_with_shape("(1_0,)"), f32_data(std::vector<float>(10)))).shape(),
      (Shape{10}));
  EXPECT_EQ(read_bytes(npy_bytes(header_with_shape("()"), f32_data({7}))).shape(), Shape{});
  EXPECT_EQ(read_bytes(npy_bytes(header_with_shape("(0, 5)"))).numel(), 0);
  // Versions 2.0 and 3.0 differ from 1.0 in the length field's width only.
  for (int major : {2, 3}) {
    EXPECT_EQ(read_bytes(npy_bytes(header_with_shape("(2, 3)"), six, major)).at(4), 4.0) << major;
  }
}

// NumPy writes F-contiguous arrays with fortran_order True: the data is
// column-major. The tensor read is in C order.
TEST(NpyFormat, FortranOrderIsReadIntoCOrder) {
  // The 2 x 3 matrix [[0, 1, 2], [3, 4, 5]], stored column by column.
  const Tensor t = read_bytes(npy_bytes(
      "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", f32_data({0, 3, 1, 4, 2, 5})));
  ASSERT_EQ(t.shape(), (Shape{2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.at(i), i) << i;
}

// Python dicts keep the last value of a repeated key, and so does NumPy: a
// float64 file must not be read as float32 (item 7).
TEST(NpyFormat, RepeatedKeyKeepsItsLastValue) {
  const double values[] = {1.5, -2.25};
  const std::string data(reinterpret_cast<const char*>(values), sizeof values);
  const Tensor t = read_bytes(
      npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'descr': '<f8', }", data));
  EXPECT_EQ(t.dtype(), DType::kFloat64);
  EXPECT_EQ(t.at(0), 1.5);
  EXPECT_EQ(t.at(1), -2.25);
}

TEST(NpyFormat, RefusesWhatNumpyRefusesNamingTheKey) {
  struct Bad {
    std::string header;
    std::vector<std::string> mentions;
  };
  const Bad cases[] = {
      {header_with_shape("(2 3)"), {"'shape'", "',' or ')'"}},
      {header_with_shape("(,,,)"), {"'shape'"}},
      {header_with_shape("(,)"), {"'shape'"}},
      {header_with_shape("(4)"), {"'shape'", "comma"}},
      {header_with_shape("(-1,)"), {"'shape'", "sign"}},
      {header_with_shape("(007,)"), {"'shape'", "leading zeros"}},
      {header_with_shape("(2.0,)"), {"'shape'", "decimal integer"}},
      {header_with_shape("(0x10,)"), {"'shape'", "decimal integer"}},
      {header_with_shape("(1__0,)"), {"'shape'", "digit after '_'"}},
      {header_with_shape("(1_,)"), {"'shape'", "digit after '_'"}},
      {header_with_shape("[2, 3]"), {"'shape'", "tuple"}},
      {header_with_shape("(99999999999999999999,)"), {"'shape'", "2^63-1"}},
      {header_with_shape("(2, 3"), {"'shape'"}},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }",
       {"'fortran_order'", "True or False"}},
      {"{'descr': '<f4', 'fortran_order': False, }", {"no key 'shape'"}},
      {"{'shape': (2,), }", {"no key 'descr', 'fortran_order'"}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", {"'extra'"}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", {"after the closing '}'"}},
      {"{'descr': '<f4', 'fortran_order': False 'shape': (2,)}",
       {"after the value of key 'fortran_order'"}},
      {"{'descr': '<f4\\x00', 'fortran_order': False, 'shape': (2,)}", {"escapes"}},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", {"'descr'"}},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (2,)}", {"'descr'", "'<u2'"}},
      {"{'descr': ['<f4'], 'fortran_order': False, 'shape': (2,)}", {"'descr'"}},
      {"'descr': '<f4'", {"dict"}},
      {"", {"dict"}},
  };
  for (const Bad& bad : cases) {
    const std::string bytes = npy_bytes(bad.header, f32_data({1, 2, 3, 4, 5, 6}));
    try {
      read_bytes(bytes);
      ADD_FAILURE() << "no error for " << bad.header;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("case.npy"), std::string::npos) << what;
      for (const std::string& m : bad.mentions) {
        EXPECT_NE(what.find(m), std::string::npos) << bad.header << " -> " << what;
      }
    }
  }
}

// std::regex recursed once per character of a long header and overflowed
// the stack at 50 to 100 KB (item 1). The scanner is a loop: a 900 KB
// header is an error or a tensor, in linear time.
TEST(NpyFormat, LongHeadersDoNotCrash) {
  const std::string long_descr =
      "{'descr': '" + std::string(900'000, 'f') + "', 'fortran_order': False, 'shape': (1,)}";
  EXPECT_ERROR_MENTIONS(read_bytes(npy_bytes(long_descr, "", 2)), {"case.npy", "'descr'", "..."});
  std::string dims;
  for (int i = 0; i < 200'000; ++i) dims += "1, ";
  const Tensor many = read_bytes(npy_bytes(header_with_shape("(" + dims + ")"), f32_data({3}), 2));
  EXPECT_EQ(many.rank(), 200'000);
  EXPECT_EQ(many.at(0), 3.0);
  std::string unclosed = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  unclosed.append(900'000, '(');
  EXPECT_ERROR_MENTIONS(read_bytes(npy_bytes(unclosed, "", 2)), {"case.npy", "'shape'"});
}

TEST(NpyFormat, HeaderLongerThanTheLimitIsRefusedBeforeItIsRead) {
  // The length field says 4 GiB - 1; the file holds a few bytes.
  std::string bytes = "\x93NUMPY\x02";
  bytes += '\0';
  bytes += std::string(4, '\xff');
  bytes += "{}";
  EXPECT_ERROR_MENTIONS(read_bytes(bytes), {"case.npy", "4294967295 bytes", "at most 1048576"});
  // Within the limit but longer than the file.
  std::string short_file = "\x93NUMPY\x02";
  short_file += '\0';
  short_file += std::string("\x00\x00\x01\x00", 4);  // 65536
  short_file += "{}";
  EXPECT_ERROR_MENTIONS(read_bytes(short_file), {"case.npy", "65536 bytes", "holds 2 more"});
}

// A small file declaring a huge array is refused from its size before
// anything is allocated (item 3): before, 8 GiB were allocated and
// zero-filled, and more ended in a bare std::bad_alloc.
TEST(NpyFormat, DeclaredSizeIsCheckedAgainstTheFileBeforeAllocating) {
  const auto start = std::chrono::steady_clock::now();
  for (const char* shape : {"(1073741824, 2)", "(1152921504606846975,)", "(65536, 65536, 65536)"}) {
    EXPECT_ERROR_MENTIONS(read_bytes(npy_bytes(header_with_shape(shape), f32_data({1, 2, 3, 4}))),
                          {"case.npy", "data holds 16 bytes", "expected"});
  }
  // Too big for any machine: NumPy's own "array is too big".
  EXPECT_ERROR_MENTIONS(
      read_bytes(npy_bytes(header_with_shape("(0, 1099511627776, 1099511627776, 1099511627776)"))),
      {"case.npy", "too big"});
  EXPECT_ERROR_MENTIONS(read_bytes(npy_bytes(header_with_shape("(2305843009213693952, 4)"))),
                        {"case.npy", "too big"});
  // Not a timing test of the reader: a guard that nothing was zero-filled.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(NpyFormat, TruncatedFilesNameWhatIsMissing) {
  EXPECT_ERROR_MENTIONS(read_bytes(std::string("\x93NUMPY\x01", 7)), {"case.npy", "magic"});
  EXPECT_ERROR_MENTIONS(read_bytes(std::string("\x93NUMPY\x01\x00\x10", 9)),
                        {"case.npy", "header length"});
  EXPECT_ERROR_MENTIONS(read_bytes(std::string("\x93NUMPY\x04\x00\x10\x00", 10)),
                        {"case.npy", "version 4.0"});
  EXPECT_ERROR_MENTIONS(read_bytes(std::string("\x93NUMPY\x01\x05\x10\x00", 10)),
                        {"case.npy", "version 1.5"});
}

class NpyFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ss_npy_format_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string bytes_of(const fs::path& p) const {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  fs::path dir_;
};

// Version 1.0's header length is 16 bits: a header past 64 KiB needs 2.0,
// as NumPy writes it (item 8). Before, the length wrapped.
TEST_F(NpyFiles, LongHeadersAreWrittenAsVersion2) {
  const float one = 1.5f;
  for (const int rank : {3, 20'000, 30'000}) {
    const Shape shape(static_cast<std::size_t>(rank), 1);
    const fs::path p = dir_ / ("rank" + std::to_string(rank) + ".npy");
    write_npy(p, TensorView::of(&one, shape));
    const std::string bytes = bytes_of(p);
    const int major = bytes[6];
    EXPECT_EQ(major, rank == 30'000 ? 2 : 1) << rank;
    const std::size_t length_bytes = major == 1 ? 2 : 4;
    std::size_t header_len = 0;
    for (std::size_t i = 0; i < length_bytes; ++i) {
      header_len |= std::size_t{static_cast<unsigned char>(bytes[8 + i])} << (8 * i);
    }
    const std::size_t data_offset = 8 + length_bytes + header_len;
    EXPECT_EQ(data_offset % 64, 0u) << rank;  // NumPy aligns the data to 64 bytes
    EXPECT_EQ(bytes.size(), data_offset + sizeof(float)) << rank;
    EXPECT_EQ(bytes[data_offset - 1], '\n') << rank;
    const Tensor back = read_npy(p);
    EXPECT_EQ(back.shape(), shape);
    EXPECT_EQ(back.at(0), 1.5);
  }
}

TEST_F(NpyFiles, ErrorsNameTheFile) {
  EXPECT_ERROR_MENTIONS(read_npy(dir_ / "missing.npy"), {"missing.npy", "cannot open"});
  EXPECT_ERROR_MENTIONS(read_npy(dir_), {"is a directory"});
  std::ofstream(dir_ / "bad.npy", std::ios::binary) << npy_bytes(header_with_shape("(2 3)"));
  EXPECT_ERROR_MENTIONS(read_npy(dir_ / "bad.npy"), {"bad.npy", "'shape'"});
}

// The writer replaces an older file only by a rename of a complete new one,
// and leaves no temporary beside it.
TEST_F(NpyFiles, WriteReplacesAtomicallyAndLeavesNoTemporary) {
  const float a[] = {1, 2};
  const float b[] = {3, 4, 5};
  write_npy(dir_ / "x.npy", TensorView::of(a, {2}));
  write_npy(dir_ / "x.npy", TensorView::of(b, {3}));
  EXPECT_EQ(read_npy(dir_ / "x.npy").shape(), Shape{3});
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"x.npy"});
  // A name too long for the file system fails before anything is touched.
  EXPECT_ERROR_MENTIONS(write_npy(dir_ / (std::string(300, 'n') + ".npy"), TensorView::of(a, {2})),
                        {"nnnn"});
  EXPECT_EQ(read_npy(dir_ / "x.npy").shape(), Shape{3});
}

}  // namespace
}  // namespace spatialsoftmax::testing
