// Conformance cases: a folder holding case.json plus one .npy file per array
// (format in shared/conformance/README.md). load_case reads a case's inputs,
// run_case runs the operator it names as a net of registered operators (the
// forward op, and its gradient from the gradient registry). Shared by the
// `spatialsoftmax eval` subcommand and the conformance tests.
//
// This is a thin mapping layer (case attributes -> operator arguments, blobs
// -> output names); it does no math of its own.
#pragma once

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::cases {

// What case.json declares about one array.
struct ArrayDecl {
  Shape shape;
  DType dtype = DType::kFloat32;
};

struct Case {
  std::filesystem::path dir;
  std::string name;
  std::string op;
  nlohmann::json attributes = nlohmann::json::object();
  // Every array case.json declares, inputs and expected outputs alike.
  std::map<std::string, ArrayDecl> declared;
  // The operator's inputs that the case holds, read from their .npy files.
  std::map<std::string, Tensor> arrays;
};

// Reads case.json and the .npy files of the arrays the case's operator takes
// as inputs (expected outputs are not read). Checks the op name, every
// attribute's name and JSON type, that required inputs are present and that
// each input file matches its declared shape and dtype. Throws
// spatialsoftmax::Error with a one-line message naming the case folder and
// the culprit (file, attribute or array).
Case load_case(const std::filesystem::path& dir);

// Runs the case's operator with its attributes and returns every output it
// computes, named as case files name their expected arrays (e.g. "loss",
// "grad_input", "P", "dX"). Throws spatialsoftmax::Error (prefixed with the
// case folder) for an invalid case or when the library rejects the inputs.
std::map<std::string, Tensor> run_case(const Case& c);

// The operator names run_case knows, sorted.
std::vector<std::string> known_ops();
// True if `array` is an input of `op` (false for outputs and unknown ops).
bool is_input(std::string_view op, std::string_view array);
// The names of the outputs a case expects: declared arrays that are not
// inputs, without the "_f64" float64 twins (see reference_name).
std::vector<std::string> expected_outputs(const Case& c);
// The declared array to compare output `name` with: "NAME_f64" if the case
// has it (the float64 reference), else "NAME".
std::string reference_name(const Case& c, const std::string& name);
// Reads any declared array of the case (e.g. an expected output), checking
// it against its declaration. Throws Error naming the case and the file.
Tensor read_array(const Case& c, const std::string& name);

}  // namespace spatialsoftmax::cases
