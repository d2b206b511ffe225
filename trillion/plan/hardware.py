"""The chips a V4 deployment is planned on, every figure with its source, and this CPU, measured.

Units: bytes, bytes/s, FLOP/s (dense, no sparsity). Link bandwidths are per device and per
direction: vendors quote NVLink and Huawei's UB/Lingqu as both directions summed, so those are
halved here (the CloudMatrix384 paper gives the 910C's UB as 392 GB/s per direction, and Huawei's
quoted 784 GB/s for the same chip is both directions: the 950's "2 TB/s, 2.5x the 910C" is too).

`scale_up_size` is the number of devices one scale-up fabric joins (an 8-GPU NVLink node, the
384-NPU CloudMatrix UB domain, the 8,192-NPU Atlas 950 SuperPoD); beyond it traffic takes the
scale-out network (`scale_out`), where one is known.

Formats in `flops`: bf16, fp8, fp4 (MXFP4 / NVFP4 class), hif8, int8, fp32. A format a chip does not
list runs at the next one down its FALLBACK chain, and the plan says so.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError

GB, TB, TFLOPS, PFLOPS = 1e9, 1e12, 1e12, 1e15

FALLBACK = {
    "fp4": ("fp4", "fp8", "bf16", "fp32"),
    "fp8": ("fp8", "bf16", "fp32"),
    "hif8": ("hif8", "fp8", "bf16", "fp32"),
    "int8": ("int8", "bf16", "fp32"),
    "bf16": ("bf16", "fp32"),
    "fp32": ("fp32",),
}

REF = "shared/reference/formats-and-hardware.md, Hardware table, row"
CM384 = "Zuo et al., 'Serving Large Language Models on Huawei CloudMatrix384', arXiv 2506.12708"
HUAWEI_CONNECT = "Huawei Connect 2025 Ascend roadmap (18 Sep 2025): 950 interconnect 2 TB/s, 2.5x the 910C"
DSV3 = "DeepSeek-V3 technical report (arXiv 2412.19437) sec. 3.2.2: NVLink 160 GB/s achieved, IB 50 GB/s"
HGX_RA = "NVIDIA HGX AI Factory reference architecture (H100/H200/B200): 2-8-9-400, 400 Gb/s per GPU"
H100_SHEET = "NVIDIA H100 SXM datasheet: INT8 Tensor Core 3,958 TOPS with sparsity (half dense)"


@dataclass(frozen=True)
class Hardware:
    """One device type: memory, bandwidth, dense throughput per format, links; `sources` per figure."""

    name: str
    label: str
    memory: float
    bandwidth: float
    flops: dict[str, float]
    scale_up: float | None  # per device per direction, within a scale-up domain
    scale_up_size: int
    scale_out: float | None  # per device per direction, between domains
    sources: dict[str, str]
    notes: tuple[str, ...] = field(default=())

    def peak(self, fmt: str) -> tuple[float, str]:
        """(FLOP/s, format it runs at): `fmt` if the chip lists it, else the first of its FALLBACK."""
        for f in FALLBACK[fmt]:
            if f in self.flops:
                return self.flops[f], f
        raise ValueError(f"{self.label} lists no throughput for {fmt} or its fallbacks {FALLBACK[fmt][1:]}")


def _ascend950(name: str, label: str, memory: float, bandwidth: float, row: str) -> Hardware:
    return Hardware(
        name=name, label=label, memory=memory, bandwidth=bandwidth,
        flops={"fp8": 1 * PFLOPS, "hif8": 1 * PFLOPS, "fp4": 2 * PFLOPS, "bf16": 0.5 * PFLOPS},
        scale_up=1 * TB, scale_up_size=8192, scale_out=None,
        sources={
            "memory": f"{REF} '{row}'", "bandwidth": f"{REF} '{row}'",
            "fp8": f"{REF} '{row}': 1 PFLOPS FP8/MXFP8/HiF8", "hif8": f"{REF} '{row}'",
            "fp4": f"{REF} '{row}': 2 PFLOPS MXFP4",
            "bf16": "assumed: half the FP8 rate, the ratio of every other chip in this table (not published)",
            "scale_up": f"{REF} '{row}': links 2 TB/s, both directions ({HUAWEI_CONNECT}; {CM384})",
            "scale_up_size": f"{REF} 'Atlas 950 SuperPoD': 8,192 x 950DT in one Lingqu (UB) domain",
        },
        notes=("BF16 rate assumed (FP8 / 2); no INT8 figure published: int8 runs at the BF16 rate",),
    )


HARDWARE: dict[str, Hardware] = {
    "950pr": replace(
        _ascend950("950pr", "Ascend 950PR", 128 * GB, 1.6 * TB, "Ascend 950PR"),
        notes=(
            "BF16 rate assumed (FP8 / 2); no INT8 figure published: int8 runs at the BF16 rate",
            "scale-up domain assumed to be a SuperPoD's 8,192 devices (Huawei announced SuperPoDs of the 950DT)",
        ),
    ),
    "950dt": _ascend950("950dt", "Ascend 950DT", 144 * GB, 4 * TB, "Ascend 950DT"),
    "910c": Hardware(
        name="910c", label="Ascend 910C (CloudMatrix384)", memory=128 * GB, bandwidth=3.2 * TB,
        flops={"bf16": 752 * TFLOPS, "int8": 1504 * TFLOPS},
        scale_up=392 * GB, scale_up_size=384, scale_out=50 * GB,
        sources={
            "memory": f"{REF} 'Ascend 910C'; {CM384} sec. 3 (128 GB, 3.2 TB/s)",
            "bandwidth": f"{REF} 'Ascend 910C'",
            "bf16": f"{CM384} sec. 3: 376 TFLOPS BF16 per die, two dies ({REF} 'Ascend 910C': ~800 FP16)",
            "int8": f"{CM384}: INT8 twice BF16; its 4.45 and 1.29 tokens/s/TFLOPS for 6,688 and 1,943 tokens/s "
            "per NPU divide by 1,503-1,506 TOPS",
            "scale_up": f"{CM384} sec. 3: UB plane, 392 GB/s per NPU per direction",
            "scale_up_size": f"{CM384}: 384 NPUs in one UB domain",
            "scale_out": f"{CM384} sec. 3: RDMA plane, 400 Gb/s per NPU",
        },
        notes=("no FP8: fp8 / mxfp4 / hif8 weights run at the BF16 rate (CloudMatrix serves INT8)",),
    ),
    "h800": Hardware(
        name="h800", label="NVIDIA H800", memory=80 * GB, bandwidth=3.35 * TB,
        flops={"bf16": 990 * TFLOPS, "fp8": 1980 * TFLOPS, "int8": 1979 * TFLOPS},
        scale_up=200 * GB, scale_up_size=8, scale_out=50 * GB,
        sources={
            "memory": f"{REF} 'NVIDIA H800 / H100'", "bandwidth": f"{REF} 'NVIDIA H800 / H100'",
            "bf16": f"{REF} 'NVIDIA H800 / H100'", "fp8": f"{REF} 'NVIDIA H800 / H100'", "int8": H100_SHEET,
            "scale_up": f"{REF} 'NVIDIA H800 / H100': NVLink 400 GB/s both directions ({DSV3})",
            "scale_up_size": "HGX H800: 8 GPUs per NVLink node (DeepSeek-V3 report sec. 3.1)",
            "scale_out": DSV3,
        },
    ),
    "h200": Hardware(
        name="h200", label="NVIDIA H200", memory=141 * GB, bandwidth=4.8 * TB,
        flops={"bf16": 990 * TFLOPS, "fp8": 1980 * TFLOPS, "int8": 1979 * TFLOPS},
        scale_up=450 * GB, scale_up_size=8, scale_out=50 * GB,
        sources={
            "memory": f"{REF} 'NVIDIA H200'", "bandwidth": f"{REF} 'NVIDIA H200'",
            "bf16": f"{REF} 'NVIDIA H200': same as H100", "fp8": f"{REF} 'NVIDIA H200': same as H100",
            "int8": H100_SHEET,
            "scale_up": f"{REF} 'NVIDIA H200': 900 GB/s both directions",
            "scale_up_size": f"{HGX_RA}: eight GPUs per node", "scale_out": HGX_RA,
        },
    ),
    "b200": Hardware(
        name="b200", label="NVIDIA B200", memory=180 * GB, bandwidth=8 * TB,
        flops={"bf16": 2.25 * PFLOPS, "fp8": 4.5 * PFLOPS, "fp4": 9 * PFLOPS},
        scale_up=900 * GB, scale_up_size=8, scale_out=50 * GB,
        sources={
            "memory": "MLPerf Inference v6.0 system descriptions: B200-SXM-180GB (the reference table's 192 GB is "
            "the die's raw capacity)",
            "bandwidth": f"{REF} 'NVIDIA B200'", "bf16": f"{REF} 'NVIDIA B200'", "fp8": f"{REF} 'NVIDIA B200'",
            "fp4": f"{REF} 'NVIDIA B200'", "scale_up": f"{REF} 'NVIDIA B200': 1.8 TB/s both directions",
            "scale_up_size": f"{HGX_RA}: eight GPUs per node", "scale_out": HGX_RA,
        },
        notes=("no INT8 figure in the table: int8 runs at the BF16 rate",),
    ),
}


# ---------------------------------------------------------------------------------- this CPU


def cpu_name() -> str:
    """'Model name' of lscpu, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_bandwidth(size_mb: int = 512, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: a sum over a buffer far larger than the caches, best of a few
    (the measurement of benchmarks/decode_bench.py)."""
    import torch

    x = torch.ones(size_mb * 2**20 // 4)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t))
    return best


def measure_flops(n: int = 1024, repeats: int = 5) -> float:
    """float32 matmul throughput in FLOP/s (n x n by n x n, best of a few)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trillion" / "cpu.json"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def cpu_hardware(bandwidth: float | None = None, flops: float | None = None, *, cache: bool = True) -> Hardware:
    """This machine as one device: its RAM, and its read bandwidth and float32 matmul rate, given
    (bytes/s, FLOP/s) or measured (about two seconds) and cached per CPU model and thread count in
    $XDG_CACHE_HOME/trillion/cpu.json (delete the file to measure again)."""
    key = f"{cpu_name()} / {_threads()} threads"
    path = _cache_file()
    stored: dict = {}
    if cache and path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            stored = {}
    entry = stored.get(key, {})
    how = {"bandwidth": "given (--bandwidth)", "fp32": "given (--flops)"}
    if bandwidth is None:
        bandwidth = entry.get("bandwidth") or measure_bandwidth()
        how["bandwidth"] = f"measured: torch sum over 512 MiB, best of 5 ({key})"
    if flops is None:
        flops = entry.get("flops") or measure_flops()
        how["fp32"] = f"measured: 1024^3 float32 matmul, best of 5 ({key})"
    if cache and (entry.get("bandwidth"), entry.get("flops")) != (bandwidth, flops):
        stored[key] = {"bandwidth": bandwidth, "flops": flops}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(stored, indent=2))
        except OSError:
            pass  # a read-only home: measure again next time
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Hardware(
        name="cpu", label=f"CPU: {cpu_name()}, {_threads()} threads", memory=float(memory),
        bandwidth=float(bandwidth), flops={"fp32": float(flops)}, scale_up=None, scale_up_size=1,
        scale_out=None,
        sources={"memory": "os.sysconf: physical pages x page size", **how},
        notes=("one machine: every format runs at the measured float32 matmul rate",),
    )


def get_hardware(name: str, *, bandwidth: float | None = None, flops: float | None = None) -> Hardware:
    """A chip of the table by name, or 'cpu' (this machine, measured unless given)."""
    key = name.lower()
    if key == "cpu":
        return cpu_hardware(bandwidth, flops)
    if key not in HARDWARE:
        raise UserError(f"unknown hardware {name!r}; known: {', '.join([*HARDWARE, 'cpu'])}")
    hw = HARDWARE[key]
    if bandwidth is not None:
        hw = replace(hw, bandwidth=bandwidth, sources={**hw.sources, "bandwidth": "given (--bandwidth)"})
    return hw


__all__ = [
    "FALLBACK",
    "HARDWARE",
    "Hardware",
    "cpu_hardware",
    "cpu_name",
    "get_hardware",
    "measure_bandwidth",
    "measure_flops",
]
