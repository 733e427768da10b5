#include "io/npy_format.h"

#include <cctype>
#include <cstdint>
#include <limits>
#include <utility>

#include "spatialsoftmax/error.h"

namespace spatialsoftmax::io {
namespace {

// Python's whitespace between tokens inside brackets.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Scanner {
 public:
  Scanner(std::string_view text, std::string_view source) : text_(text), source_(source) {}

  [[noreturn]] void fail(std::string_view what) const {
    // A header may be long: quote only the text where the scan stopped.
    constexpr std::size_t kQuote = 24;
    std::string near(text_.substr(pos_, kQuote));
    for (char& c : near) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    }
    throw Error("npy file " + std::string(source_) + ": header " + std::string(what) +
                (pos_ < text_.size()
                     ? ", got '" + near + (text_.size() - pos_ > kQuote ? "...'" : "'")
                     : ", got the end of the header") +
                " at byte " + std::to_string(pos_));
  }

  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }
  bool at_end() const { return pos_ == text_.size(); }
  bool consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool consume(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  void expect(char c, std::string_view what) {
    if (!consume(c)) fail(what);
  }

  // A quoted string without escapes ('...' or "...").
  std::string quoted(std::string_view what) {
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) fail(what);
    const char quote = text_[pos_++];
    const std::size_t begin = pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\' || text_[pos_] == '\n') fail(std::string(what) + " without escapes");
      ++pos_;
    }
    if (pos_ == text_.size()) fail(std::string(what) + " with its closing quote");
    return std::string(text_.substr(begin, pos_++ - begin));
  }

  bool boolean(std::string_view what) {
    if (consume("True")) return true;
    if (consume("False")) return false;
    fail(what);
  }

  // A Python decimal integer literal that fits int64 ('_' between digits,
  // no leading zeros but for 0 itself).
  std::int64_t dimension(std::string_view what) {
    if (pos_ < text_.size() && (text_[pos_] == '-' || text_[pos_] == '+')) {
      fail(std::string(what) + ": a dimension without a sign");
    }
    if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail(what);
    const bool leading_zero = text_[pos_] == '0';
    std::int64_t value = 0;
    for (;;) {
      const int digit = text_[pos_++] - '0';
      if (leading_zero && digit != 0) fail(std::string(what) + ": no leading zeros");
      if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10) {
        fail(std::string(what) + ": a dimension of at most 2^63-1");
      }
      value = value * 10 + digit;
      if (consume('_') && (pos_ >= text_.size() || !is_digit(text_[pos_]))) {
        fail(std::string(what) + ": a digit after '_'");
      }
      if (pos_ >= text_.size() || !is_digit(text_[pos_])) break;
    }
    if (pos_ < text_.size() &&
        (std::isalpha(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.')) {
      fail(std::string(what) + ": a decimal integer");
    }
    return value;
  }

  // (), (a,), (a, b), (a, b,) -- but (a) is an int, not a tuple.
  Shape tuple(std::string_view what) {
    expect('(', what);
    Shape shape;
    skip_space();
    if (consume(')')) return shape;
    for (;;) {
      shape.push_back(dimension(what));
      skip_space();
      if (consume(',')) {
        skip_space();
        if (consume(')')) return shape;
        continue;
      }
      if (shape.size() == 1 && pos_ < text_.size() && text_[pos_] == ')') {
        fail(std::string(what) + " (a one-element tuple needs its comma)");
      }
      if (consume(')')) return shape;
      fail(std::string(what) + ": ',' or ')' after a dimension");
    }
  }

 private:
  std::string_view text_;
  std::string_view source_;
  std::size_t pos_ = 0;
};

}  // namespace

NpyHeader parse_npy_header(std::string_view text, std::string_view source) {
  Scanner s(text, source);
  NpyHeader header;
  bool has_descr = false, has_fortran_order = false, has_shape = false;
  s.skip_space();
  s.expect('{', "expected a dict '{...}'");
  s.skip_space();
  while (!s.consume('}')) {
    const std::string key = s.quoted("expected a quoted key or '}'");
    s.skip_space();
    s.expect(':', "expected ':' after key '" + key + "'");
    s.skip_space();
    // A repeated key keeps its last value, as in the Python dict NumPy reads.
    if (key == "descr") {
      header.descr = s.quoted("key 'descr': expected a quoted type string such as '<f4'");
      has_descr = true;
    } else if (key == "fortran_order") {
      header.fortran_order = s.boolean("key 'fortran_order': expected True or False");
      has_fortran_order = true;
    } else if (key == "shape") {
      header.shape = s.tuple("key 'shape': expected a tuple of non-negative integers");
      has_shape = true;
    } else {
      s.fail("key '" + key + "': expected only the keys 'descr', 'fortran_order' and 'shape'");
    }
    s.skip_space();
    if (s.consume(',')) {
      s.skip_space();
    } else if (!s.consume('}')) {
      s.fail("expected ',' or '}' after the value of key '" + key + "'");
    } else {
      break;
    }
  }
  s.skip_space();
  if (!s.at_end()) s.fail("expected nothing but spaces after the closing '}'");
  if (!has_descr || !has_fortran_order || !has_shape) {
    std::string missing;
    for (const auto& [present, name] : {std::pair{has_descr, "'descr'"},
                                        {has_fortran_order, "'fortran_order'"},
                                        {has_shape, "'shape'"}}) {
      if (!present) missing += std::string(missing.empty() ? "" : ", ") + name;
    }
    throw Error("npy file " + std::string(source) + ": header has no key " + missing +
                "; expected 'descr', 'fortran_order' and 'shape'");
  }
  return header;
}

}  // namespace spatialsoftmax::io
