// ConstantFill and Sum: what a gradient net needs around the loss operators
// (the seed of each loss gradient, and the sum of a blob's gradient parts).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "op/operators/op_helpers.h"

namespace spatialsoftmax::op::detail {
namespace {

// caffe2.proto TensorProto.DataType numbers.
DType dtype_arg(const OperatorDef& def, std::int64_t code) {
  switch (code) {
    case 1:
      return DType::kFloat32;
    case 2:
      return DType::kInt32;
    case 10:
      return DType::kInt64;
    case 13:
      return DType::kFloat64;
    default:
      throw Error(describe(def) + ": argument 'dtype' = " + std::to_string(code) +
                  ", expected 1 (float), 2 (int32), 10 (int64) or 13 (double)");
  }
}

TensorSpec fill_spec(const OperatorDef& def, const Args& args,
                     const std::optional<TensorSpec>& like) {
  TensorSpec s;
  if (like) {
    s = *like;
    if (args.has("shape")) {
      throw Error(describe(def) +
                  ": argument 'shape': expected absent when an input gives the shape");
    }
  } else if (args.has("shape")) {
    s.shape = args.get_ints("shape");
  }
  if (args.has("dtype")) s.dtype = dtype_arg(def, args.get_int("dtype"));
  return s;
}

// ConstantFill's `value` for a dtype: an int argument is kept exact (an
// int64 never goes through float), a float argument filling an integer
// dtype must be an integer in the dtype's range (Caffe2 cast it: NaN, 2.5 or
// 3e9 gave garbage or undefined behaviour), and float dtypes take the value
// as IEEE converts it (the argument is a float32 or an int64, so float32 only
// rounds and nothing overflows; NaN and infinities are filled as given).
struct FillValue {
  double real = 0;         // float dtypes
  std::int64_t whole = 0;  // integer dtypes
};

std::string number_text(double v) {
  std::ostringstream out;
  out.precision(9);  // the argument is a float32: 9 digits give it exactly
  out << v;
  return out.str();
}

template <class I>
std::int64_t integer_value(const OperatorDef& def, const ArgValue& v, DType dtype) {
  constexpr auto lo = std::numeric_limits<I>::min();
  constexpr auto hi = std::numeric_limits<I>::max();
  const auto fail = [&](const std::string& got) {
    throw Error(describe(def) + ": argument 'value': expected an integer in [" +
                std::to_string(lo) + ", " + std::to_string(hi) + "] (the range of " +
                std::string(dtype_name(dtype)) + ", the output's dtype), got " + got);
  };
  if (const auto* i = std::get_if<std::int64_t>(&v)) {
    if (*i < lo || *i > hi) fail(std::to_string(*i));
    return *i;
  }
  const double f = std::holds_alternative<float>(v) ? std::get<float>(v) : 0.0;
  // The integers in [lo, -lo) are I's range; -lo is a power of two, so both
  // bounds are exact as doubles.
  if (!(f >= static_cast<double>(lo) && f < -static_cast<double>(lo))) fail(number_text(f));
  if (f != std::trunc(f)) fail(number_text(f) + " (not an integer; no rounding is done)");
  return static_cast<std::int64_t>(f);
}

FillValue fill_value(const OperatorDef& def, DType dtype) {
  const Argument* a = def.find_arg("value");
  const ArgValue v = a ? a->value : ArgValue(0.0f);  // the schema's default
  FillValue out;
  switch (dtype) {
    case DType::kInt32:
      out.whole = integer_value<std::int32_t>(def, v, dtype);
      break;
    case DType::kInt64:
      out.whole = integer_value<std::int64_t>(def, v, dtype);
      break;
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kBFloat16:
    case DType::kFloat16:
      if (const auto* i = std::get_if<std::int64_t>(&v)) {
        out.real = static_cast<double>(*i);  // rounds to nearest beyond 2^53
      } else if (const auto* f = std::get_if<float>(&v)) {
        out.real = *f;
      }
      break;
  }
  return out;
}

void fill(Tensor& t, const FillValue& v) {
  const std::int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kFloat32:
      std::fill_n(t.data_as<float>(), n, static_cast<float>(v.real));
      break;
    case DType::kFloat64:
      std::fill_n(t.data_as<double>(), n, v.real);
      break;
    case DType::kInt32:
      std::fill_n(t.data_as<std::int32_t>(), n, static_cast<std::int32_t>(v.whole));
      break;
    case DType::kInt64:
      std::fill_n(t.data_as<std::int64_t>(), n, v.whole);
      break;
    case DType::kBFloat16:
      std::fill_n(t.data_as<BFloat16>(), n, to_bfloat16(static_cast<float>(v.real)));
      break;
    case DType::kFloat16:
      std::fill_n(t.data_as<Float16>(), n, to_float16(static_cast<float>(v.real)));
      break;
  }
}

// Each addition in float32, rounded to the type, as PyTorch adds 16-bit tensors.
template <class T, class Round>
void add_into_16_bit(Tensor& sum, const Tensor& x, Round round) {
  T* s = sum.data_as<T>();
  const T* v = x.data_as<T>();
  for (std::int64_t i = 0; i < sum.numel(); ++i) s[i] = round(to_float(s[i]) + to_float(v[i]));
}

template <class T>
void add_into(Tensor& sum, const Tensor& x) {
  T* s = sum.data_as<T>();
  const T* v = x.data_as<T>();
  for (std::int64_t i = 0; i < sum.numel(); ++i) s[i] += v[i];
}

// Integer sums wrap silently (signed overflow is even undefined): the first
// overflowing element is an error naming the output, the index and both terms.
template <class T>
void add_into_checked(Tensor& sum, const Tensor& x, const OpRun& r, std::size_t input) {
  T* s = sum.data_as<T>();
  const T* v = x.data_as<T>();
  for (std::int64_t i = 0; i < sum.numel(); ++i) {
    T out;
    if (__builtin_add_overflow(s[i], v[i], &out)) {
      const auto term = [&](std::size_t k) {
        return "input " + std::to_string(k) + ", blob '" + r.def().inputs[k] + "'";
      };
      const std::string partial =
          input == 1 ? term(0) : "the sum of inputs 0.." + std::to_string(input - 1);
      throw Error(describe(r.def()) + ": output 'sum' (blob '" + r.def().outputs[0] +
                  "') [flat index " + std::to_string(i) + "]: " + std::to_string(s[i]) + " (" +
                  partial + ") + " + std::to_string(v[i]) + " (" + term(input) + ") overflows " +
                  std::string(dtype_name(sum.dtype())) + ", expected a sum in [" +
                  std::to_string(std::numeric_limits<T>::min()) + ", " +
                  std::to_string(std::numeric_limits<T>::max()) + "]");
    }
    s[i] = out;
  }
}

}  // namespace

void register_utility_operators() {
  add_schema("ConstantFill")
      .doc(
          "A tensor filled with `value`: shaped like the input if one is given (and of its "
          "dtype unless `dtype` says otherwise; Caffe2 defaulted to float), else `shape`.")
      .optional_input("input", "a tensor whose shape (and dtype) to take")
      .output("output", "the filled tensor")
      .arg("value", ArgType::kFloat, 0.0f,
           "the fill value. An int argument is exact for int64 and must fit int32 for int32. "
           "Integer dtypes refuse a float value that is NaN, infinite, out of the dtype's range "
           "or not an integer (no rounding; Caffe2 cast it). Float dtypes take the value as "
           "IEEE converts it: NaN and infinities are filled as given, an int beyond 2^24 "
           "(float) or 2^53 (double) rounds to nearest")
      .arg("shape", ArgType::kInts, std::monostate{},
           "the shape when there is no input (default [])")
      .arg("dtype", ArgType::kInt, std::monostate{},
           "TensorProto.DataType: 1 float, 2 int32, 10 int64, 13 double")
      .check([](const OperatorDef& def, const Args& args) {
        // Checked when the operator is created, not only when it runs.
        if (args.has("dtype")) (void)dtype_arg(def, args.get_int("dtype"));
        // Without an input the dtype is known now: so is whether value fits.
        if (def.inputs.empty()) (void)fill_value(def, fill_spec(def, args, std::nullopt).dtype);
        if (!def.inputs.empty() && args.has("shape")) {
          throw Error(describe(def) +
                      ": argument 'shape': expected absent when an input gives the shape");
        }
      })
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const TensorSpec s = fill_spec(def, args, in.empty() ? std::nullopt : in[0]);
        (void)fill_value(def, s.dtype);
        return TensorSpecs{s};
      });
  add_host_operator("ConstantFill", [](OpRun& r) {
    std::optional<TensorSpec> like;
    if (r.has_input(0)) like = TensorSpec{r.input(0).dtype(), r.input(0).shape()};
    const TensorSpec s = fill_spec(r.def(), r.args(), like);
    Tensor out(s.dtype, s.shape);
    fill(out, fill_value(r.def(), s.dtype));
    r.set_output(0, std::move(out));
  });

  add_schema("Sum")
      .doc(
          "Elementwise sum of inputs of one shape and dtype. Float sums follow IEEE; an "
          "int32 or int64 sum that overflows is an error naming the element.")
      .input("data_0", "first input; more may follow")
      .variadic_input()
      .output("sum", "the inputs' shape")
      .infer([](const OperatorDef& def, const Args&, const TensorSpecs& in) {
        const TensorSpec& first = spec(def, in, 0);
        for (std::size_t i = 1; i < in.size(); ++i) {
          const std::string name = "input " + std::to_string(i);
          expect_dtype(def, spec(def, in, i), first.dtype, name);
          expect_shape(def, spec(def, in, i), first.shape, name, "(input 0's shape)");
        }
        return TensorSpecs{first};
      });
  add_host_operator("Sum", [](OpRun& r) {
    const Tensor& first = r.input(0);
    Tensor sum = Tensor::copy_of(first);
    for (std::size_t i = 1; i < r.input_count(); ++i) {
      const Tensor& x = r.input(i);
      if (x.dtype() != first.dtype() || x.shape() != first.shape()) {
        throw Error("input " + std::to_string(i) + " (" + r.def().inputs[i] + "): expected " +
                    std::string(dtype_name(first.dtype())) + " " + shape_string(first.shape()) +
                    " like input 0, got " + std::string(dtype_name(x.dtype())) + " " +
                    shape_string(x.shape()));
      }
      switch (sum.dtype()) {
        case DType::kFloat32:
          add_into<float>(sum, x);
          break;
        case DType::kFloat64:
          add_into<double>(sum, x);
          break;
        case DType::kInt32:
          add_into_checked<std::int32_t>(sum, x, r, i);
          break;
        case DType::kInt64:
          add_into_checked<std::int64_t>(sum, x, r, i);
          break;
        case DType::kBFloat16:
          add_into_16_bit<BFloat16>(sum, x, [](float f) { return to_bfloat16(f); });
          break;
        case DType::kFloat16:
          add_into_16_bit<Float16>(sum, x, [](float f) { return to_float16(f); });
          break;
      }
    }
    r.set_output(0, std::move(sum));
  });
}

}  // namespace spatialsoftmax::op::detail
