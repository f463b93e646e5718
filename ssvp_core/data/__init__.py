"""Benchmark data: records, readers per layout, synthetic benchmark, verification and the torch Dataset."""
from .records import NORMAL, Problem, Sample, ScanResult, group_by_class, summarize
from .registry import BENCHMARKS, benchmark, prompt_name, read_dataset, scan_dataset

__all__ = [
    "NORMAL", "Problem", "Sample", "ScanResult", "group_by_class", "summarize",
    "BENCHMARKS", "benchmark", "prompt_name", "read_dataset", "scan_dataset",
]
