"""What this CPU can do fast, read from its flags rather than assumed.

The same 2-core machine kind comes as an AMD EPYC with AVX2 only, where bf16 matmuls are emulated and
*slower* than fp32 (0.6x measured), and as an Intel Xeon with AVX512-BF16 and AMX, where bf16 is 2.5x
faster. So the inference dtype on CPU is chosen from ``/proc/cpuinfo``, never written into a config.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""Flags that mean native bf16 matmuls (AVX512-BF16 dot products or AMX tiles)."""

SIMD_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class CPUInfo:
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def fast_bf16(self) -> bool:
        return bool(self.flags & BF16_FLAGS)

    def describe(self) -> str:
        """One line for benchmark headers: model, cores and the SIMD flags that decide speed."""
        simd = " ".join(f for f in SIMD_FLAGS if f in self.flags) or "none"
        return f"{self.model} ({self.cores} cores; {simd})"


@functools.cache
def cpu_info(cpuinfo: str | None = None) -> CPUInfo:
    """Parse ``/proc/cpuinfo`` (or the given text); off Linux, flags are empty and bf16 counts as slow."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # every core repeats the same block: the first one is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CPUInfo(model=fields.get("model name") or platform.processor() or "unknown CPU",
                   flags=frozenset(fields.get("flags", "").split()), cores=os.cpu_count() or 1)
