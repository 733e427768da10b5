#include "spatialsoftmax/op/schema.h"

#include <algorithm>
#include <limits>
#include <set>
#include <sstream>

#include "op/tables.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::op {
namespace {

[[noreturn]] void fail(const OperatorDef& def, const std::string& what) {
  throw Error(describe(def) + ": " + what);
}

bool value_fits(ArgType type, const ArgValue& v) {
  switch (type) {
    case ArgType::kInt:
      return std::holds_alternative<std::int64_t>(v);
    case ArgType::kFloat:  // Caffe2 front ends write 1 for 1.0 as often as not
      return std::holds_alternative<float>(v) || std::holds_alternative<std::int64_t>(v);
    case ArgType::kString:
      return std::holds_alternative<std::string>(v);
    case ArgType::kInts:
      return std::holds_alternative<std::vector<std::int64_t>>(v);
    case ArgType::kFloats:
      return std::holds_alternative<std::vector<float>>(v);
    case ArgType::kStrings:
      return std::holds_alternative<std::vector<std::string>>(v);
  }
  return false;
}

std::string value_text(const ArgValue& v) {
  std::ostringstream out;
  std::visit(
      [&](const auto& x) {
        using V = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<V, std::monostate>) {
          out << "(none)";
        } else if constexpr (std::is_same_v<V, std::string>) {
          out << '"' << x << '"';
        } else if constexpr (std::is_same_v<V, float> || std::is_same_v<V, std::int64_t>) {
          out << x;
        } else {
          out << '[';
          for (std::size_t i = 0; i < x.size(); ++i) {
            if (i) out << ", ";
            if constexpr (std::is_same_v<V, std::vector<std::string>>) {
              out << '"' << x[i] << '"';
            } else {
              out << x[i];
            }
          }
          out << ']';
        }
      },
      v);
  return out.str();
}

std::string port_list(const std::vector<PortSchema>& ports) {
  std::string out;
  for (const PortSchema& p : ports) {
    if (!out.empty()) out += ", ";
    out += p.optional ? "[" + p.name + "]" : p.name;
  }
  return out;
}

std::string count_range(int lo, int hi) {
  if (hi == std::numeric_limits<int>::max()) return "at least " + std::to_string(lo);
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + " to " + std::to_string(hi);
}

int required_count(const std::vector<PortSchema>& ports) {
  int n = 0;
  for (const PortSchema& p : ports) n += p.optional ? 0 : 1;
  return n;
}

}  // namespace

std::string_view arg_type_name(ArgType type) {
  switch (type) {
    case ArgType::kInt:
      return "int";
    case ArgType::kFloat:
      return "float";
    case ArgType::kString:
      return "string";
    case ArgType::kInts:
      return "ints";
    case ArgType::kFloats:
      return "floats";
    case ArgType::kStrings:
      return "strings";
  }
  return "?";
}

// --- Args ---------------------------------------------------------------------

const ArgValue& Args::value(std::string_view name) const {
  if (const Argument* a = def_.find_arg(name)) return a->value;
  const ArgSchema* s = schema_.find_arg(name);
  if (s == nullptr || std::holds_alternative<std::monostate>(s->default_value)) {
    fail(def_, "argument '" + std::string(name) + "': missing and has no default");
  }
  return s->default_value;
}

std::int64_t Args::get_int(std::string_view name) const {
  return std::get<std::int64_t>(value(name));
}

double Args::get_float(std::string_view name) const {
  const ArgValue& v = value(name);
  if (const auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  return std::get<float>(v);
}

std::string Args::get_string(std::string_view name) const {
  return std::get<std::string>(value(name));
}

std::vector<std::int64_t> Args::get_ints(std::string_view name) const {
  return std::get<std::vector<std::int64_t>>(value(name));
}

// --- OpSchema -----------------------------------------------------------------

OpSchema& OpSchema::doc(std::string text) {
  doc_ = std::move(text);
  return *this;
}
OpSchema& OpSchema::input(std::string name, std::string text) {
  inputs_.push_back({std::move(name), std::move(text), false});
  return *this;
}
OpSchema& OpSchema::optional_input(std::string name, std::string text) {
  inputs_.push_back({std::move(name), std::move(text), true});
  return *this;
}
OpSchema& OpSchema::output(std::string name, std::string text) {
  outputs_.push_back({std::move(name), std::move(text), false});
  return *this;
}
OpSchema& OpSchema::optional_output(std::string name, std::string text) {
  outputs_.push_back({std::move(name), std::move(text), true});
  return *this;
}
OpSchema& OpSchema::arg(std::string name, ArgType type, ArgValue default_value, std::string text) {
  args_.push_back({std::move(name), type, std::move(default_value), false, std::move(text)});
  return *this;
}
OpSchema& OpSchema::required_arg(std::string name, ArgType type, std::string text) {
  args_.push_back({std::move(name), type, std::monostate{}, true, std::move(text)});
  return *this;
}
OpSchema& OpSchema::check(CheckFn fn) {
  check_ = std::move(fn);
  return *this;
}
OpSchema& OpSchema::infer(InferFn fn) {
  infer_ = std::move(fn);
  return *this;
}
OpSchema& OpSchema::variadic_input() {
  variadic_ = true;
  return *this;
}

int OpSchema::max_inputs() const {
  return variadic_ ? std::numeric_limits<int>::max() : static_cast<int>(inputs_.size());
}

OpSchema& OpSchema::allow_empty_optional_names() {
  empty_optional_names_ = true;
  return *this;
}

const ArgSchema* OpSchema::find_arg(std::string_view name) const {
  for (const ArgSchema& a : args_) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

int OpSchema::min_inputs() const { return required_count(inputs_); }
int OpSchema::min_outputs() const { return required_count(outputs_); }

bool OpSchema::has_input(const OperatorDef& def, std::size_t i) const {
  return i < def.inputs.size() && !def.inputs[i].empty();
}
bool OpSchema::has_output(const OperatorDef& def, std::size_t i) const {
  return i < def.outputs.size() && !def.outputs[i].empty();
}

void OpSchema::validate(const OperatorDef& def) const {
  if (def.type != type_) fail(def, "validated against the schema of " + type_);
  auto check_ports = [&](const std::vector<std::string>& names,
                         const std::vector<PortSchema>& ports, const char* what, bool variadic) {
    const int lo = required_count(ports);
    const int hi = variadic ? std::numeric_limits<int>::max() : static_cast<int>(ports.size());
    const int n = static_cast<int>(names.size());
    if (n < lo || n > hi) {
      fail(def, std::string(what) + ": expected " + count_range(lo, hi) + " (" + port_list(ports) +
                    (variadic ? ", ..." : "") + "), got " + std::to_string(n));
    }
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (!names[i].empty()) continue;
      const PortSchema& port = ports[std::min(i, ports.size() - 1)];
      if (!(empty_optional_names_ && port.optional)) {
        fail(def, std::string(what) + " " + std::to_string(i) + " (" + port.name +
                      "): expected a blob name, got an empty one");
      }
    }
  };
  check_ports(def.inputs, inputs_, "inputs", variadic_);
  check_ports(def.outputs, outputs_, "outputs", false);
  check_distinct_outputs(def, op::describe(def));

  std::set<std::string, std::less<>> seen;
  for (const Argument& a : def.args) {
    if (!seen.insert(a.name).second) fail(def, "argument '" + a.name + "' given twice");
    const ArgSchema* s = find_arg(a.name);
    if (s == nullptr) {
      std::string known;
      for (const ArgSchema& k : args_) known += (known.empty() ? "" : ", ") + k.name;
      fail(def, "unknown argument '" + a.name +
                    "' (expected one of: " + (known.empty() ? std::string("none") : known) + ")");
    }
    if (!value_fits(s->type, a.value)) {
      fail(def, "argument '" + a.name + "': expected " + std::string(arg_type_name(s->type)) +
                    ", got " + std::string(arg_kind_name(a.value)) + " " + value_text(a.value));
    }
  }
  for (const ArgSchema& s : args_) {
    if (s.required && !seen.contains(s.name)) {
      fail(def, "argument '" + s.name + "': required (" + std::string(arg_type_name(s.type)) +
                    "), missing");
    }
  }
  if (check_) check_(def, Args(*this, def));
}

TensorSpecs OpSchema::infer_outputs(const OperatorDef& def, const TensorSpecs& inputs) const {
  validate(def);
  if (inputs.size() != def.inputs.size()) {
    fail(def, "shape inference: expected " + std::to_string(def.inputs.size()) +
                  " input specs, got " + std::to_string(inputs.size()));
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (has_input(def, i) && !inputs[i]) {
      fail(def,
           "shape inference: input " + std::to_string(i) + " (" + def.inputs[i] + ") has no spec");
    }
  }
  TensorSpecs out = infer_(def, Args(*this, def), inputs);
  out.resize(def.outputs.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!has_output(def, i)) out[i].reset();
  }
  return out;
}

std::string OpSchema::describe() const {
  std::ostringstream out;
  out << type_ << "\n  " << doc_ << "\n";
  auto ports = [&](const char* title, const std::vector<PortSchema>& list) {
    const bool repeats = variadic_ && &list == &inputs_;
    out << title << " ("
        << count_range(required_count(list),
                       repeats ? std::numeric_limits<int>::max() : static_cast<int>(list.size()))
        << "):\n";
    for (std::size_t i = 0; i < list.size(); ++i) {
      out << "  " << i << " " << list[i].name << (list[i].optional ? " (optional)" : "") << ": "
          << list[i].doc << "\n";
    }
  };
  ports("inputs", inputs_);
  if (variadic_) out << "  ... (the last input repeats)\n";
  ports("outputs", outputs_);
  out << "arguments:" << (args_.empty() ? " none" : "") << "\n";
  for (const ArgSchema& a : args_) {
    out << "  " << a.name << " (" << arg_type_name(a.type);
    if (a.required) {
      out << ", required";
    } else if (!std::holds_alternative<std::monostate>(a.default_value)) {
      out << ", default " << value_text(a.default_value);
    } else {
      out << ", optional";
    }
    out << "): " << a.doc << "\n";
  }
  return out.str();
}

// --- registry -----------------------------------------------------------------

const OpSchema* find_schema(std::string_view type) {
  detail::ensure_builtins();
  const auto& table = detail::schema_table();
  const auto it = table.find(type);
  return it == table.end() ? nullptr : it->second.get();
}

const OpSchema& schema_of(std::string_view type) {
  if (const OpSchema* s = find_schema(type)) return *s;
  throw Error("operator " + std::string(type) +
              ": not registered (`spatialsoftmax ops` lists the operators)");
}

std::vector<std::string> schema_types() {
  detail::ensure_builtins();
  std::vector<std::string> types;
  for (const auto& [type, schema] : detail::schema_table()) types.push_back(type);
  return types;
}

OpSchema& define_schema(std::string type) {
  detail::ensure_builtins();
  return detail::add_schema(std::move(type));
}

SpecMap infer_net(const NetDef& net, SpecMap known) {
  for (std::size_t k = 0; k < net.ops.size(); ++k) {
    const OperatorDef& def = net.ops[k];
    const OpSchema& schema = schema_of(def.type);
    TensorSpecs inputs;
    for (const std::string& name : def.inputs) {
      if (name.empty()) {
        inputs.emplace_back();
        continue;
      }
      const auto it = known.find(name);
      if (it == known.end()) {
        throw Error("op " + std::to_string(k) + " " + describe(def) + ": input blob '" + name +
                    "' is neither an external input nor produced by an earlier op");
      }
      inputs.emplace_back(it->second);
    }
    TensorSpecs outputs;
    try {
      outputs = schema.infer_outputs(def, inputs);
    } catch (const Error& e) {
      throw Error("op " + std::to_string(k) + " " + e.what());
    }
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i]) known.insert_or_assign(def.outputs[i], *outputs[i]);
    }
  }
  return known;
}

}  // namespace spatialsoftmax::op
