// ConstantFill and Sum: what a gradient net needs around the loss operators
// (the seed of each loss gradient, and the sum of a blob's gradient parts).
#include <cstring>

#include "op/operators/op_helpers.h"

namespace spatialsoftmax::op::detail {
namespace {

// caffe2.proto TensorProto.DataType numbers.
DType dtype_arg(const OperatorDef& def, std::int64_t code) {
  switch (code) {
    case 1: return DType::kFloat32;
    case 2: return DType::kInt32;
    case 10: return DType::kInt64;
    case 13: return DType::kFloat64;
    default:
      throw Error(describe(def) + ": argument 'dtype' = " + std::to_string(code) +
                  ", expected 1 (float), 2 (int32), 10 (int64) or 13 (double)");
  }
}

TensorSpec fill_spec(const OperatorDef& def, const Args& args, const std::optional<TensorSpec>& like) {
  TensorSpec s;
  if (like) {
    s = *like;
    if (args.has("shape")) {
      throw Error(describe(def) + ": argument 'shape': expected absent when an input gives the shape");
    }
  } else if (args.has("shape")) {
    s.shape = args.get_ints("shape");
  }
  if (args.has("dtype")) s.dtype = dtype_arg(def, args.get_int("dtype"));
  return s;
}

void fill(Tensor& t, double value) {
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::kFloat32: t.data_as<float>()[i] = static_cast<float>(value); break;
      case DType::kFloat64: t.data_as<double>()[i] = value; break;
      case DType::kInt32: t.data_as<std::int32_t>()[i] = static_cast<std::int32_t>(value); break;
      case DType::kInt64: t.data_as<std::int64_t>()[i] = static_cast<std::int64_t>(value); break;
    }
  }
}

template <class T>
void add_into(Tensor& sum, const Tensor& x) {
  T* s = sum.data_as<T>();
  const T* v = x.data_as<T>();
  for (std::int64_t i = 0; i < sum.numel(); ++i) s[i] += v[i];
}

}  // namespace

void register_utility_operators() {
  add_schema("ConstantFill")
      .doc("A tensor filled with `value`: shaped like the input if one is given (and of its "
           "dtype unless `dtype` says otherwise; Caffe2 defaulted to float), else `shape`.")
      .optional_input("input", "a tensor whose shape (and dtype) to take")
      .output("output", "the filled tensor")
      .arg("value", ArgType::kFloat, 0.0f, "the fill value")
      .arg("shape", ArgType::kInts, std::monostate{}, "the shape when there is no input (default [])")
      .arg("dtype", ArgType::kInt, std::monostate{},
           "TensorProto.DataType: 1 float, 2 int32, 10 int64, 13 double")
      .check([](const OperatorDef& def, const Args& args) {
        // Checked when the operator is created, not only when it runs.
        if (args.has("dtype")) (void)dtype_arg(def, args.get_int("dtype"));
        if (!def.inputs.empty() && args.has("shape")) {
          throw Error(describe(def) +
                      ": argument 'shape': expected absent when an input gives the shape");
        }
      })
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        return TensorSpecs{fill_spec(def, args, in.empty() ? std::nullopt : in[0])};
      });
  add_cpu_operator("ConstantFill", [](OpRun& r) {
    std::optional<TensorSpec> like;
    if (r.has_input(0)) like = TensorSpec{r.input(0).dtype(), r.input(0).shape()};
    const TensorSpec s = fill_spec(r.def(), r.args(), like);
    Tensor out(s.dtype, s.shape);
    fill(out, r.args().get_float("value"));
    r.set_output(0, std::move(out));
  });

  add_schema("Sum")
      .doc("Elementwise sum of inputs of one shape and dtype.")
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
  add_cpu_operator("Sum", [](OpRun& r) {
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
        case DType::kFloat32: add_into<float>(sum, x); break;
        case DType::kFloat64: add_into<double>(sum, x); break;
        case DType::kInt32: add_into<std::int32_t>(sum, x); break;
        case DType::kInt64: add_into<std::int64_t>(sum, x); break;
      }
    }
    r.set_output(0, std::move(sum));
  });
}

}  // namespace spatialsoftmax::op::detail
