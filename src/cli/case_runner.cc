#include "cli/case_runner.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <utility>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/npy.h"
#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/workspace.h"
#include "spatialsoftmax/options.h"

namespace spatialsoftmax::cases {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Outputs = std::map<std::string, Tensor>;

// ---------------------------------------------------------------------------
// Errors: one line, starting with the case folder.

std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  return text;
}

[[noreturn]] void fail(const fs::path& dir, const std::string& what) {
  throw Error(one_line(dir.string() + ": " + what));
}

// ---------------------------------------------------------------------------
// The case operators. Each names its inputs and attributes (so that
// load_case can check a case before anything runs) and a small function that
// maps the case onto a net of registered operators.

enum class AttrType { kString, kNumber, kInteger, kBool };

struct AttrSpec {
  std::string_view name;
  AttrType type;
};

struct InputSpec {
  std::string_view name;
  bool required;
};

struct CaseNet;
using NetFn = CaseNet (*)(const Case&);

struct OpSpec {
  std::string_view name;
  std::vector<InputSpec> inputs;
  std::vector<AttrSpec> attributes;
  NetFn net;
};

const OpSpec* find_op(std::string_view name);

std::string_view type_name(AttrType type) {
  switch (type) {
    case AttrType::kString:
      return "a string";
    case AttrType::kNumber:
      return "a number";
    case AttrType::kInteger:
      return "an integer";
    case AttrType::kBool:
      return "a boolean";
  }
  return "?";
}

// Integers are accepted where a number is expected (JSON writers drop ".0"),
// but not the other way round, and booleans are never numbers.
bool has_type(const json& value, AttrType type) {
  switch (type) {
    case AttrType::kString:
      return value.is_string();
    case AttrType::kNumber:
      return value.is_number();
    case AttrType::kInteger:
      return value.is_number_integer() &&
             !(value.is_number_unsigned() &&
               value.get<std::uint64_t>() >
                   static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
    case AttrType::kBool:
      return value.is_boolean();
  }
  return false;
}

std::string known_attribute_list(const OpSpec& spec) {
  std::string list;
  for (const AttrSpec& a : spec.attributes) {
    list += (list.empty() ? "" : ", ") + std::string(a.name);
  }
  return list.empty() ? "none" : list;
}

const OpSpec& op_spec(const Case& c) {
  const OpSpec* spec = find_op(c.op);
  if (spec == nullptr) {
    std::string list;
    for (const std::string& name : known_ops()) list += (list.empty() ? "" : ", ") + name;
    fail(c.dir, "case.json: unknown op '" + c.op + "' (known: " + list + ")");
  }
  return *spec;
}

void check_attributes(const Case& c, const OpSpec& spec) {
  if (!c.attributes.is_object()) fail(c.dir, "case.json: 'attributes' is not an object");
  for (const auto& item : c.attributes.items()) {
    const std::string& key = item.key();
    const auto& value = item.value();
    const auto it = std::find_if(spec.attributes.begin(), spec.attributes.end(),
                                 [&](const AttrSpec& a) { return a.name == key; });
    if (it == spec.attributes.end()) {
      fail(c.dir, "case.json: attribute '" + key + "' is not known for op " + c.op +
                      " (known: " + known_attribute_list(spec) + ")");
    }
    if (!has_type(value, it->type)) {
      fail(c.dir, "case.json: attribute '" + key + "' must be " + std::string(type_name(it->type)) +
                      ", got " + value.dump());
    }
  }
}

void check_inputs_present(const Case& c, const OpSpec& spec) {
  for (const InputSpec& in : spec.inputs) {
    if (in.required && !c.arrays.contains(std::string(in.name))) {
      fail(c.dir, "op " + c.op + " needs input array '" + std::string(in.name) +
                      "', which the case does not have");
    }
  }
}

// ---------------------------------------------------------------------------
// Reading a case's attributes and inputs inside the per-op functions. The
// attribute types were checked against the op table already.

std::string string_attr(const Case& c, const std::string& name, const std::string& fallback) {
  const auto it = c.attributes.find(name);
  return it == c.attributes.end() ? fallback : it->get<std::string>();
}

double number_attr(const Case& c, const std::string& name, double fallback) {
  const auto it = c.attributes.find(name);
  return it == c.attributes.end() ? fallback : it->get<double>();
}

bool bool_attr(const Case& c, const std::string& name, bool fallback) {
  const auto it = c.attributes.find(name);
  return it == c.attributes.end() ? fallback : it->get<bool>();
}

std::optional<std::int64_t> optional_int_attr(const Case& c, const std::string& name) {
  const auto it = c.attributes.find(name);
  if (it == c.attributes.end()) return std::nullopt;
  return it->get<std::int64_t>();
}

Reduction reduction_attr(const Case& c) {
  return parse_reduction(string_attr(c, "reduction", "mean"), "case.json: attribute reduction");
}

ClassAxis layout_attr(const Case& c) {
  return parse_layout(string_attr(c, "layout", "NCHW"), "case.json: attribute layout");
}

const Tensor& input(const Case& c, const std::string& name) {
  const auto it = c.arrays.find(name);
  if (it == c.arrays.end()) {
    fail(c.dir, "op " + c.op + " needs input array '" + name + "', which the case does not have");
  }
  return it->second;
}

// ---------------------------------------------------------------------------
// One function per case operator: the case as a net of registered operators.
// The gradient comes from the gradient registry (add_gradient_ops), seeded
// with the case's upstream gradient where it has one, else with 1.

struct CaseNet {
  op::OperatorDef forward;
  std::string loss;  // the blob to differentiate; empty: forward only
  std::string seed;  // case array holding the loss's upstream gradient, or ""
  std::vector<std::pair<std::string, std::string>> outputs;  // blob -> case output name
};

// The case's array name if it has it, else "" (an absent optional input).
std::string optional_blob(const Case& c, const std::string& name) {
  return c.arrays.contains(name) ? name : "";
}

void copy_int_attr(const Case& c, const std::string& name, op::OperatorDef& def) {
  if (const auto v = optional_int_attr(c, name)) def.set_arg(name, *v);
}

std::string layout_order(const Case& c) {
  return std::string(to_string(layout_attr(c)));  // checks the spelling
}

// `grad_output` is required for reduction none (README: otherwise the
// upstream gradient is 1).
std::string upstream_seed(const Case& c) {
  if (!c.arrays.contains("grad_output") && reduction_attr(c) == Reduction::kNone) {
    fail(c.dir, "op " + c.op + " with reduction none needs input array 'grad_output'");
  }
  return optional_blob(c, "grad_output");
}

CaseNet onnx_softmax_cross_entropy_net(const Case& c) {
  // log_prob is the node's optional second output; a case declares it when
  // its node has it.
  std::vector<std::string> outputs = {"loss"};
  if (c.declared.contains("log_prob")) outputs.push_back("log_prob");
  CaseNet n{op::make_operator("SoftmaxCrossEntropyLoss",
                              {"scores", "labels", optional_blob(c, "weights")}, outputs),
            "",
            "",
            {}};
  n.forward.set_arg("reduction", std::string(to_string(reduction_attr(c))));
  copy_int_attr(c, "ignore_index", n.forward);
  for (const std::string& o : outputs) n.outputs.emplace_back(o, o);
  return n;
}

CaseNet onnx_nll_net(const Case& c) {
  CaseNet n{op::make_operator("NegativeLogLikelihoodLoss",
                              {"input", "target", optional_blob(c, "weight")}, {"loss"}),
            "",
            "",
            {{"loss", "loss"}}};
  n.forward.set_arg("reduction", std::string(to_string(reduction_attr(c))));
  copy_int_attr(c, "ignore_index", n.forward);
  return n;
}

// The `targets` attribute must agree with the target's dtype, because the
// library decides by dtype alone.
void check_targets_attr(const Case& c, const Tensor& target) {
  const std::string kind =
      string_attr(c, "targets", is_floating(target.dtype()) ? "probabilities" : "indices");
  if (kind != "indices" && kind != "probabilities") {
    fail(c.dir,
         "case.json: attribute 'targets' = '" + kind + "', expected one of indices, probabilities");
  }
  if ((kind == "probabilities") != is_floating(target.dtype())) {
    fail(c.dir, "target.npy: dtype " + std::string(dtype_name(target.dtype())) +
                    " does not fit attribute targets = '" + kind + "'");
  }
}

// Forward output "output" and the gradient of "input", as torch-ce names them.
CaseNet torch_loss_net(const Case& c, op::OperatorDef forward) {
  forward.set_arg("order", layout_order(c));
  forward.set_arg("reduction", std::string(to_string(reduction_attr(c))));
  return {std::move(forward),
          "output",
          upstream_seed(c),
          {{"output", "output"}, {"input_grad", "grad_input"}}};
}

CaseNet cross_entropy_net(const Case& c) {
  check_targets_attr(c, input(c, "target"));
  // README: no ignore_index unless the case sets one.
  op::OperatorDef def = op::make_operator(
      "CrossEntropy", {"input", "target", optional_blob(c, "weight")}, {"output"});
  def.set_arg("label_smoothing", static_cast<float>(number_attr(c, "label_smoothing", 0.0)));
  copy_int_attr(c, "ignore_index", def);
  return torch_loss_net(c, std::move(def));
}

CaseNet kl_div_net(const Case& c) {
  op::OperatorDef def = op::make_operator("KLDiv", {"input", "target"}, {"output"});
  def.set_arg("log_target", std::int64_t{bool_attr(c, "log_target", false) ? 1 : 0});
  return torch_loss_net(c, std::move(def));
}

// softmax / log_softmax over the class axis: axis 1 (NCHW) or the last.
CaseNet class_softmax_net(const Case& c, const char* type) {
  op::OperatorDef def = op::make_operator(type, {"input"}, {"output"});
  def.set_arg("axis", std::int64_t{layout_attr(c) == ClassAxis::kFirst ? 1 : -1});
  return {std::move(def),
          "output",
          "grad_output",
          {{"output", "output"}, {"input_grad", "grad_input"}}};
}
CaseNet softmax_net(const Case& c) { return class_softmax_net(c, "Softmax"); }
CaseNet log_softmax_net(const Case& c) { return class_softmax_net(c, "LogSoftmax"); }

// The forward op alone; its gradient op (X, T, [weight_tensor], P, d_avg_loss)
// comes from the gradient registry, as Caffe2's gradient maker wires it.
CaseNet spatial_softmax_with_loss_net(const Case& c) {
  std::vector<std::string> inputs = {"X", "T"};
  if (c.arrays.contains("weight_tensor")) inputs.push_back("weight_tensor");
  CaseNet n{op::make_operator("SpatialSoftmaxWithLoss", inputs, {"P", "avg_loss"}),
            "avg_loss",
            "d_avg_loss",
            {{"P", "P"}, {"avg_loss", "avg_loss"}, {"X_grad", "dX"}}};
  n.forward.set_arg("scale", static_cast<float>(number_attr(c, "scale", 1.0)));
  n.forward.set_arg("order", string_attr(c, "order", "NCHW"));
  n.forward.set_arg("caffe2_variant", string_attr(c, "variant", "cpu"));
  return n;
}

CaseNet spatial_soft_argmax_net(const Case& c) {
  CaseNet n{op::make_operator("SpatialSoftArgmax", {"input"}, {"output"}),
            "output",
            "grad_output",
            {{"output", "output"}, {"input_grad", "grad_input"}}};
  n.forward.set_arg("order", layout_order(c));
  n.forward.set_arg("temperature", static_cast<float>(number_attr(c, "temperature", 1.0)));
  for (const char* name : {"temperature_mode", "coordinates", "singleton_coordinate"}) {
    if (c.attributes.contains(name)) n.forward.set_arg(name, string_attr(c, name, ""));
  }
  return n;
}

const std::vector<OpSpec>& op_table() {
  using A = AttrType;
  static const std::vector<OpSpec> table = {
      {"SoftmaxCrossEntropyLoss",
       {{"scores", true}, {"labels", true}, {"weights", false}},
       {{"reduction", A::kString}, {"ignore_index", A::kInteger}},
       onnx_softmax_cross_entropy_net},
      {"NegativeLogLikelihoodLoss",
       {{"input", true}, {"target", true}, {"weight", false}},
       {{"reduction", A::kString}, {"ignore_index", A::kInteger}},
       onnx_nll_net},
      {"cross_entropy",
       {{"input", true}, {"target", true}, {"weight", false}, {"grad_output", false}},
       {{"reduction", A::kString},
        {"label_smoothing", A::kNumber},
        {"targets", A::kString},
        {"layout", A::kString},
        {"ignore_index", A::kInteger}},
       cross_entropy_net},
      {"kl_div",
       {{"input", true}, {"target", true}, {"grad_output", false}},
       {{"reduction", A::kString}, {"log_target", A::kBool}, {"layout", A::kString}},
       kl_div_net},
      {"softmax", {{"input", true}, {"grad_output", true}}, {{"layout", A::kString}}, softmax_net},
      {"log_softmax",
       {{"input", true}, {"grad_output", true}},
       {{"layout", A::kString}},
       log_softmax_net},
      {"SpatialSoftmaxWithLoss",
       {{"X", true}, {"T", true}, {"weight_tensor", false}, {"d_avg_loss", true}},
       {{"scale", A::kNumber}, {"order", A::kString}, {"variant", A::kString}},
       spatial_softmax_with_loss_net},
      {"spatial_soft_argmax",
       {{"input", true}, {"grad_output", true}},
       {{"temperature", A::kNumber},
        {"temperature_mode", A::kString},
        {"coordinates", A::kString},
        {"layout", A::kString},
        {"singleton_coordinate", A::kString}},
       spatial_soft_argmax_net},
  };
  return table;
}

const OpSpec* find_op(std::string_view name) {
  for (const OpSpec& spec : op_table()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// case.json

json parse_case_json(const fs::path& dir) {
  const fs::path file = dir / "case.json";
  if (!fs::is_directory(dir)) fail(dir, "not a folder");
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(dir, "case.json: cannot be opened");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(dir, std::string("case.json: not valid JSON: ") + e.what());
  }
}

std::string string_field(const fs::path& dir, const json& doc, const char* key) {
  const auto it = doc.find(key);
  if (it == doc.end()) fail(dir, std::string("case.json: missing '") + key + "'");
  if (!it->is_string()) fail(dir, std::string("case.json: '") + key + "' is not a string");
  return it->get<std::string>();
}

void check_top_level_keys(const fs::path& dir, const json& doc) {
  if (!doc.is_object()) fail(dir, "case.json: not a JSON object");
  static constexpr std::string_view kKnown[] = {"name", "op",         "opset",
                                                "peer", "attributes", "arrays"};
  for (const auto& [key, value] : doc.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      fail(dir, "case.json: unknown key '" + key +
                    "' (known: name, op, opset, peer, attributes, arrays)");
    }
  }
  if (doc.contains("opset") && !doc["opset"].is_number_integer()) {
    fail(dir, "case.json: 'opset' is not an integer");
  }
  if (doc.contains("peer") && !doc["peer"].is_string()) {
    fail(dir, "case.json: 'peer' is not a string");
  }
}

DType parse_dtype(const fs::path& dir, const std::string& array, const json& value) {
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kInt64}) {
    if (value.is_string() && value.get<std::string>() == dtype_name(d)) return d;
  }
  fail(dir, "case.json: array '" + array + "': dtype " + value.dump() +
                ", expected one of float32, float64, int32, int64");
}

Shape parse_shape(const fs::path& dir, const std::string& array, const json& value) {
  const auto bad = [&] {
    fail(dir, "case.json: array '" + array + "': shape " + value.dump() +
                  ", expected a list of non-negative integers");
  };
  if (!value.is_array()) bad();
  Shape shape;
  for (const json& d : value) {
    if (!d.is_number_integer() || d.get<std::int64_t>() < 0) bad();
    shape.push_back(d.get<std::int64_t>());
  }
  return shape;
}

std::map<std::string, ArrayDecl> parse_declarations(const fs::path& dir, const json& doc) {
  const auto it = doc.find("arrays");
  if (it == doc.end()) fail(dir, "case.json: missing 'arrays'");
  if (!it->is_object()) fail(dir, "case.json: 'arrays' is not an object");
  std::map<std::string, ArrayDecl> declared;
  for (const auto& [name, decl] : it->items()) {
    if (!decl.is_object() || !decl.contains("shape") || !decl.contains("dtype")) {
      fail(dir, "case.json: array '" + name + "' needs 'shape' and 'dtype'");
    }
    declared[name] = {parse_shape(dir, name, decl["shape"]), parse_dtype(dir, name, decl["dtype"])};
  }
  return declared;
}

Tensor read_declared(const fs::path& dir, const std::string& name, const ArrayDecl& decl) {
  const fs::path file = dir / (name + ".npy");
  if (!fs::exists(file)) fail(dir, name + ".npy: missing (declared in case.json)");
  Tensor t = read_npy(file);  // its errors name the file
  if (t.dtype() != decl.dtype) {
    fail(dir, name + ".npy: dtype " + std::string(dtype_name(t.dtype())) + ", case.json says " +
                  std::string(dtype_name(decl.dtype)));
  }
  if (t.shape() != decl.shape) {
    fail(dir, name + ".npy: shape " + shape_string(t.shape()) + ", case.json says " +
                  shape_string(decl.shape));
  }
  return t;
}

}  // namespace

Case load_case(const fs::path& dir) {
  const json doc = parse_case_json(dir);
  check_top_level_keys(dir, doc);
  Case c;
  c.dir = dir;
  c.name = string_field(dir, doc, "name");
  c.op = string_field(dir, doc, "op");
  if (doc.contains("attributes")) c.attributes = doc["attributes"];
  c.declared = parse_declarations(dir, doc);
  const OpSpec& spec = op_spec(c);
  check_attributes(c, spec);
  for (const InputSpec& in : spec.inputs) {
    const auto decl = c.declared.find(std::string(in.name));
    if (decl != c.declared.end()) {
      c.arrays.emplace(decl->first, read_declared(dir, decl->first, decl->second));
    }
  }
  check_inputs_present(c, spec);
  return c;
}

std::map<std::string, Tensor> run_case(const Case& c) {
  // A Case may be built by hand, so check it as load_case does.
  const OpSpec& spec = op_spec(c);
  check_attributes(c, spec);
  check_inputs_present(c, spec);
  try {
    CaseNet n = spec.net(c);
    op::NetDef net;
    net.name = c.name;
    for (const auto& [name, tensor] : c.arrays) net.external_inputs.push_back(name);
    net.ops.push_back(n.forward);
    if (!n.loss.empty()) {
      std::map<std::string, std::string, std::less<>> given;
      if (!n.seed.empty()) given.emplace(n.loss, n.seed);
      op::add_gradient_ops(net, {n.loss}, given);
    }
    op::Workspace ws;
    for (const auto& [name, tensor] : c.arrays) ws.set(name, Tensor::copy_of(tensor));
    op::run_net(net, ws);
    Outputs out;
    for (const auto& [blob, name] : n.outputs) out.emplace(name, Tensor::copy_of(ws.get(blob)));
    return out;
  } catch (const Error& e) {
    const std::string what = e.what();
    // Our own failures already start with the folder; the library's do not.
    if (what.rfind(c.dir.string() + ": ", 0) == 0) throw;
    fail(c.dir, what);
  }
}

std::vector<std::string> known_ops() {
  std::vector<std::string> names;
  for (const OpSpec& spec : op_table()) names.emplace_back(spec.name);
  std::sort(names.begin(), names.end());
  return names;
}

bool is_input(std::string_view op, std::string_view array) {
  const OpSpec* spec = find_op(op);
  if (spec == nullptr) return false;
  return std::any_of(spec->inputs.begin(), spec->inputs.end(),
                     [&](const InputSpec& in) { return in.name == array; });
}

std::vector<std::string> expected_outputs(const Case& c) {
  static constexpr std::string_view kTwin = "_f64";
  std::vector<std::string> names;
  for (const auto& [name, decl] : c.declared) {
    std::string base = name;
    if (base.size() > kTwin.size() && base.ends_with(kTwin)) {
      base.resize(base.size() - kTwin.size());
    }
    if (is_input(c.op, base)) continue;
    if (std::find(names.begin(), names.end(), base) == names.end()) names.push_back(base);
  }
  return names;
}

std::string reference_name(const Case& c, const std::string& name) {
  const std::string twin = name + "_f64";
  return c.declared.contains(twin) ? twin : name;
}

Tensor read_array(const Case& c, const std::string& name) {
  const auto it = c.declared.find(name);
  if (it == c.declared.end()) fail(c.dir, "case.json: no array '" + name + "' declared");
  return read_declared(c.dir, name, it->second);
}

}  // namespace spatialsoftmax::cases
