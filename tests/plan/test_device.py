"""trillion.device: device types live in one module; the rest of the package never names one."""

import ast
import warnings
from pathlib import Path

import pytest
import torch

from trillion import device
from trillion.quant.linear import HiF8Linear

PACKAGE = Path(device.__file__).resolve().parent
DEVICE_NAMES = ("cuda", "npu", "xpu", "mps", "nccl", "hccl", "xccl")
ACCELERATOR_MODULES = ("cuda", "npu", "xpu", "mps")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def device_mentions(source: str) -> list[str]:
    """Device-type strings ("cuda", "npu:0", "nccl" ...), torch.cuda / torch.npu attributes and
    torch_npu imports in Python source; docstrings and comments do not count."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            word = node.value.split(":")[0]
            if word in DEVICE_NAMES:
                found.append(f"line {node.lineno}: string {node.value!r}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "torch" and node.attr in ACCELERATOR_MODULES:
                found.append(f"line {node.lineno}: torch.{node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] == "torch_npu" for n in names):
                found.append(f"line {node.lineno}: import torch_npu")
    return found


def test_the_scanner_finds_what_it_looks_for():
    src = 'import torch_npu\n"""doc: cuda is fine here"""\nx.device.type == "cuda"\ntorch.npu.synchronize()\nf"npu:{i}"\n'
    assert sorted(m.split(":", 1)[1].strip() for m in device_mentions(src)) == [
        "import torch_npu", "string 'cuda'", "string 'npu:'", "torch.npu"]
    assert device_mentions('"""Runs on cuda and npu."""\n# "cuda" in a comment\ny = "cudagraph"\n') == []


def test_no_device_names_outside_trillion_device():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(device.__file__).resolve():
            continue
        found = device_mentions(path.read_text())
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert offenders == {}, f"device names outside trillion/device.py (route them through it): {offenders}"


def test_backends_follow_the_device():
    assert device.backend_for("cpu") == "gloo"
    assert device.backend_for(torch.device("cuda", 1)) == "nccl"
    assert device.backend_for("npu") == "hccl"
    with pytest.raises(ValueError, match="no torch.distributed backend known for device type 'meta'"):
        device.backend_for("meta")


def test_this_machine_is_a_cpu_one():
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present")
    assert device.accelerator() is None
    assert device.default_device() == torch.device("cpu")
    assert device.device_for_rank(0) == torch.device("cpu")
    device.synchronize("cpu")  # nothing to wait for


def test_fp8_block_gemm_only_on_hopper(monkeypatch):
    assert not device.has_fp8_block_gemm("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    assert device.has_fp8_block_gemm(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (10, 0))  # Blackwell
    assert not device.has_fp8_block_gemm(torch.device("cuda", 0))


def test_reference_path_warns_once_per_format_and_device(monkeypatch):
    monkeypatch.setattr(device, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        device.warn_reference_path("hif8", "cpu")  # the designed path on a CPU: silent
    with pytest.warns(UserWarning, match="hif8 weights on meta: no native kernel"):
        device.warn_reference_path("hif8", "meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        device.warn_reference_path("hif8", "meta")  # once only
    with pytest.warns(UserWarning, match="mxfp4 weights on meta"):
        device.warn_reference_path("mxfp4", torch.device("meta"))


def test_a_quantised_module_off_the_cpu_says_it_falls_back(monkeypatch):
    monkeypatch.setattr(device, "_warned", set())
    m = HiF8Linear.from_float(torch.randn(128, 128))
    x = torch.randn(2, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x)  # CPU: no warning
    calls = []
    monkeypatch.setattr("trillion.quant.linear.warn_reference_path", lambda kind, dev: calls.append((kind, str(dev))))
    m(x)
    assert calls == [("hif8", "cpu")]  # the module reports its format and device on every call
