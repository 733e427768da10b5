#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<harness>/ (standard library only).

A handful of small valid inputs per reader and a few slightly broken ones, so
that the fuzzers start from both sides of each check. Run it again after
changing it; it replaces the corpus folders it writes.
"""
import json
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "corpus"


# --- .npy ----------------------------------------------------------------

def npy(descr, shape, payload, version=(1, 0), fortran=False, header=None):
    if header is None:
        # NumPy's spelling: (), (5,), (2, 3).
        shape_text = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
        header = (f"{{'descr': '{descr}', 'fortran_order': {fortran}, "
                  f"'shape': {shape_text}, }}")
    length_size = 2 if version == (1, 0) else 4
    prefix = 6 + 2 + length_size
    text = header.encode("latin1")
    pad = (-(prefix + len(text) + 1)) % 64
    text += b" " * pad + b"\n"
    length = struct.pack("<H" if length_size == 2 else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + payload


def f4(*v):
    return struct.pack(f"<{len(v)}f", *v)


def npy_seeds():
    return {
        "f4_2x3.npy": npy("<f4", (2, 3), f4(0, 1, -2, 3.5, float("nan"), -0.0)),
        "f8_scalar.npy": npy("<f8", (), struct.pack("<d", 2.5)),
        "i4_vector.npy": npy("<i4", (5,), struct.pack("<5i", 0, 1, -1, 7, 2**31 - 1)),
        "i8_fortran.npy": npy("<i8", (2, 2), struct.pack("<4q", 1, 2, 3, 4), fortran=True),
        "f4_empty.npy": npy("<f4", (0, 3), b""),
        "f4_v2.npy": npy("<f4", (1, 2), f4(1, 2), version=(2, 0)),
        "f4_v3.npy": npy("<f4", (2,), f4(1, 2), version=(3, 0)),
        # Broken: short payload, unknown dtype, big-endian, no newline, bad
        # magic, a shape far beyond the bytes, a negative dimension.
        "bad_truncated.npy": npy("<f4", (2, 3), f4(0, 1, 2)),
        "bad_descr.npy": npy("<f2", (2,), b"\0\0\0\0"),
        "bad_big_endian.npy": npy(">f4", (1,), b"\0\0\0\0"),
        "bad_no_newline.npy": npy("<f4", (1,), f4(1))[:-5] + f4(1)[:1],
        "bad_magic.npy": b"\x93NUMPX" + npy("<f4", (1,), f4(1))[6:],
        "bad_huge_shape.npy": npy("<f4", (1 << 40, 1 << 30), f4(1)),
        "bad_negative.npy": npy("<i8", (-1, 2), b""),
        "bad_dict.npy": npy("<f4", (1,), f4(1),
                            header="{'descr': '<f4', 'shape': (1,), 'fortran_order': Fals, }"),
    }


# --- NetDef, protobuf binary (caffe2.proto field numbers) -----------------

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 5:
        return key + struct.pack("<f", payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return key + varint(len(data)) + data


def arg(name, **value):
    out = field(1, 2, name)
    if "f" in value:
        out += field(2, 5, value["f"])
    if "i" in value:
        out += field(3, 0, value["i"])
    if "s" in value:
        out += field(4, 2, value["s"])
    for f in value.get("floats", []):
        out += field(5, 5, f)
    for i in value.get("ints", []):
        out += field(6, 0, i)
    for s in value.get("strings", []):
        out += field(7, 2, s)
    return out


def operator(type_, inputs, outputs, args=(), name=None, device=None, gradient=False):
    out = b"".join(field(1, 2, i) for i in inputs)
    out += b"".join(field(2, 2, o) for o in outputs)
    if name:
        out += field(3, 2, name)
    out += field(4, 2, type_)
    out += b"".join(field(5, 2, a) for a in args)
    if device is not None:
        out += field(6, 2, field(1, 0, device[0]) + field(2, 0, device[1]))
    if gradient:
        out += field(9, 0, 1)
    return out


def net(name, ops, inputs=(), outputs=()):
    out = field(1, 2, name)
    out += b"".join(field(2, 2, o) for o in ops)
    out += b"".join(field(7, 2, i) for i in inputs)
    out += b"".join(field(8, 2, o) for o in outputs)
    return out


def binary_seeds():
    loss = operator("SpatialSoftmaxWithLoss", ["X", "T"], ["P", "avg_loss"],
                    [arg("scale", f=1.0), arg("order", s="NCHW")])
    softmax = operator("Softmax", ["X"], ["Y"], [arg("axis", i=1)], name="sm", device=(0, 0))
    lists = operator("CrossEntropy", ["X", "T", ""], ["L"],
                     [arg("weights", floats=[1.0, 0.5]), arg("shape", ints=[2, -3]),
                      arg("names", strings=["a", "b"])], gradient=True)
    whole = net("seg", [loss, softmax], ["X", "T"], ["avg_loss"])
    # Unused caffe2.proto fields: NetDef.type, num_workers, an Argument.n.
    extras = net("x", [lists]) + field(3, 2, "dag") + field(4, 0, 4) + \
        field(6, 2, field(1, 2, "sub") + field(8, 2, net("inner", [])))
    return {
        "empty.pb": b"",
        "loss.pb": whole,
        "lists.pb": extras,
        "cuda.pb": net("c", [operator("Softmax", ["X"], ["Y"], device=(1, 3))]),
        "bad_truncated.pb": whole[:-3],
        "bad_wire_type.pb": field(2, 0, 7),
        "bad_device.pb": net("d", [operator("Softmax", ["X"], ["Y"], device=(6, 0))]),
        "bad_two_values.pb": net("v", [operator("A", [], [], [arg("k", f=1.0, i=2)])]),
    }


# --- NetDef, protobuf text format -----------------------------------------

TEXT_SEEDS = {
    "loss.pbtxt": '''name: "seg"
op {
  input: "X" input: "T" output: "P" output: "avg_loss"
  type: "SpatialSoftmaxWithLoss"
  arg { name: "scale" f: 1.0 }
  arg { name: "order" s: "NCHW" }
}
external_input: "X"
external_output: "avg_loss"
''',
    "lists.pbtxt": '''op { type: "CrossEntropy" name: "ce" input: "X" input: "T" input: "" output: "L"
  arg { name: "weights" floats: 1 floats: 0.5 floats: nan }
  arg { name: "ints" ints: -3 ints: 9223372036854775807 }
  arg { name: "names" strings: "a\\001b" strings: "" }
  device_option { device_type: 1 device_id: 2 } engine: "E" is_gradient_op: true }
type: "dag" num_workers: 2
''',
    "empty.pbtxt": "",
    "comment.pbtxt": '# a comment\nop { type: "Softmax" input: "X" output: "Y" }\n',
    "bad_unclosed.pbtxt": 'op { type: "Softmax" input: "X"\n',
    "bad_field.pbtxt": 'op { type: "A" inputs: "X" }\n',
    "bad_two_values.pbtxt": 'op { type: "A" arg { name: "k" f: 1 i: 2 } }\n',
    "bad_no_name.pbtxt": 'op { type: "A" arg { i: 1 } }\n',
    "bad_duplicate.pbtxt": 'op { type: "A" arg { name: "k" i: 1 } arg { name: "k" i: 2 } }\n',
}


# --- NetDef, protobuf JSON mapping -----------------------------------------

JSON_SEEDS = {
    "loss.json": {"name": "seg", "op": [{
        "type": "SpatialSoftmaxWithLoss", "input": ["X", "T"], "output": ["P", "avg_loss"],
        "arg": [{"name": "scale", "f": 1.0}, {"name": "order", "s": "TkNIVw=="}]}],
        "external_input": ["X", "T"], "externalOutput": ["avg_loss"]},
    "lists.json": {"op": [{
        "type": "CrossEntropy", "name": "ce", "input": ["X", "T", ""], "output": ["L"],
        "arg": [{"name": "w", "floats": [1, 0.5, "NaN", "-Infinity"]},
                {"name": "n", "ints": ["-3", 9007199254740993]},
                {"name": "s", "strings": ["YQ==", ""]}, {"name": "i", "i": "12"}],
        "device_option": {"device_type": 1, "device_id": 2}, "engine": "E",
        "is_gradient_op": True}], "type": "dag", "num_workers": 2},
    "empty.json": {},
    "bad_ops.json": {"ops": []},
    "bad_int.json": {"op": [{"arg": [{"name": "k", "i": "x"}]}]},
    "bad_device.json": {"op": [{"type": "A", "device_option": {"device_type": 6}}]},
}


# --- conformance case.json ---------------------------------------------------
# Shapes and dtypes of the fixed .npy files fuzz_case.cc writes in its first
# folder; PROB_ARRAYS and KEYPOINT_ARRAYS differ in those of its second
# (probability targets, class-shaped upstream gradients) and third (keypoint
# upstream gradients).

ARRAYS = {
    "input": ([2, 3, 2, 2], "float32"), "target": ([2, 2, 2], "int64"),
    "weight": ([3], "float32"), "grad_output": ([2, 2, 2], "float32"),
    "scores": ([2, 3, 2, 2], "float32"), "labels": ([2, 2, 2], "int64"),
    "weights": ([3], "float32"), "X": ([2, 3, 2, 2], "float32"), "T": ([2, 2, 2], "int32"),
    "weight_tensor": ([2, 2, 2], "float32"), "d_avg_loss": ([], "float32"),
}
PROB_ARRAYS = dict(ARRAYS, target=([2, 3, 2, 2], "float32"), grad_output=([2, 3, 2, 2], "float32"))
KEYPOINT_ARRAYS = dict(ARRAYS, grad_output=([2, 3, 2], "float32"))


def case(op, names, attributes, outputs=(), decl=ARRAYS, **top):
    arrays = {n: {"shape": decl[n][0], "dtype": decl[n][1]} for n in names}
    for name, shape, dtype in outputs:
        arrays[name] = {"shape": shape, "dtype": dtype}
    doc = {"name": "fuzz_" + op, "op": op, "attributes": attributes, "arrays": arrays}
    doc.update(top)
    return doc


CASE_SEEDS = {
    "ce_none.json": case("cross_entropy", ["input", "target", "weight", "grad_output"],
                         {"reduction": "none", "label_smoothing": 0.1, "layout": "NCHW",
                          "targets": "indices", "ignore_index": 1},
                         [("output", [2, 2, 2], "float32")], peer="pytorch"),
    "ce_mean.json": case("cross_entropy", ["input", "target"],
                         {"reduction": "mean", "label_smoothing": 0.0, "layout": "NCHW",
                          "targets": "indices"}, [("output", [], "float32")]),
    "ce_probabilities.json": case("cross_entropy", ["input", "target", "weight"],
                                  {"reduction": "sum", "label_smoothing": 0.2,
                                   "layout": "NCHW", "targets": "probabilities"}, decl=PROB_ARRAYS),
    "kl_div.json": case("kl_div", ["input", "target"],
                        {"reduction": "batchmean", "log_target": False, "layout": "NHWC"},
                        decl=PROB_ARRAYS),
    "kl_div_none.json": case("kl_div", ["input", "target", "grad_output"],
                             {"reduction": "none", "log_target": True, "layout": "NCHW"},
                             decl=PROB_ARRAYS),
    "softmax.json": case("softmax", ["input", "grad_output"], {"layout": "NCHW"}, decl=PROB_ARRAYS),
    "log_softmax.json": case("log_softmax", ["input", "grad_output"], {"layout": "NHWC"},
                             decl=PROB_ARRAYS),
    "sce.json": case("SoftmaxCrossEntropyLoss", ["scores", "labels", "weights"],
                     {"reduction": "sum", "ignore_index": 2},
                     [("loss", [], "float32"), ("log_prob", [2, 3, 2, 2], "float32")],
                     opset=13),
    "nll.json": case("NegativeLogLikelihoodLoss", ["input", "target", "weight"],
                     {"reduction": "mean"}, opset=13),
    "c2_spatial.json": case("SpatialSoftmaxWithLoss", ["X", "T", "weight_tensor", "d_avg_loss"],
                            {"scale": 2.0, "order": "NCHW"},
                            [("P", [2, 3, 2, 2], "float32"), ("avg_loss", [], "float32"),
                             ("dX_f64", [2, 3, 2, 2], "float64")]),
    "soft_argmax.json": case("spatial_soft_argmax", ["input", "grad_output"],
                             {"temperature": 0.5, "temperature_mode": "divide",
                              "coordinates": "normalized", "layout": "NCHW"},
                             decl=KEYPOINT_ARRAYS),
    # Broken: an unknown op, a wrong attribute type, a shape that does not
    # match the file, a missing required input, not JSON at all.
    "bad_op.json": case("Nope", ["input"], {}),
    "bad_attr.json": case("softmax", ["input"], {"layout": 3}),
    "bad_shape.json": {"name": "s", "op": "softmax", "attributes": {},
                       "arrays": {"input": {"shape": [3, 2], "dtype": "float32"}}},
    "bad_missing.json": case("SpatialSoftmaxWithLoss", ["X"], {}),
}


def main():
    corpora = {
        "fuzz_npy": npy_seeds(),
        "fuzz_net_binary": binary_seeds(),
        "fuzz_net_text": {k: v.encode() for k, v in TEXT_SEEDS.items()},
        "fuzz_net_json": {k: json.dumps(v).encode() for k, v in JSON_SEEDS.items()},
        "fuzz_case": {k: json.dumps(v).encode() for k, v in CASE_SEEDS.items()},
    }
    corpora["fuzz_net_json"]["bad_syntax.json"] = b'{"op": [{"type": "A"}'
    corpora["fuzz_case"]["bad_syntax.json"] = b'{"name": "x", "op": '
    for harness, files in corpora.items():
        folder = ROOT / harness
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{folder}: {len(files)} files, {sum(len(d) for d in files.values())} bytes")


if __name__ == "__main__":
    main()
