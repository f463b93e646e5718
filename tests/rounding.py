"""Tolerances for comparing floats that two different computations produced.

Bitwise equality holds only where the code guarantees it: a stored array read back, a copy, the same computation
replayed on the same inputs. Two passes that differ in batch composition, thread count or kernel (the BLAS picks its
blocking from the matrix shape and the CPU; sharded vs whole, cached vs direct, compiled vs eager) sum the same
products in another order, and float32 sums are not associative: each result may move by a few units in the last
place (ulps), and more where a transformer carries the difference through its layers. The bound used here: a
length-K reduction in another order moves by ~sqrt(K) ulps of its scale (rounding errors add like a random walk),
times a margin of `ulps` for the layers a tiny test model has. Measured on the tiny SSVP backbones (K = 512, the MLP
width): 1-3 ulps of the output's scale; the bound, 32 x sqrt(512) ulps = 8.6e-5 relative, leaves a margin of ~100
and stays below what a real fault gives (fp16 rounding ~4e-4 of the scale, another image's features ~0.3).
"""
import math

import torch

ULPS = 32  # margin for the layers between a reduction and the compared output


def rounding_rtol(reduction: int, dtype: torch.dtype = torch.float32, ulps: int = ULPS) -> float:
    """Relative tolerance (to the compared tensor's largest magnitude) for two computations of the same value that
    differ only in the order of length-`reduction` sums."""
    return ulps * torch.finfo(dtype).eps * math.sqrt(reduction)


def assert_equal_to_rounding(ours: torch.Tensor, reference: torch.Tensor, rtol: float, what: str = "") -> None:
    """max |ours - reference| <= rtol * max |reference| (`rtol` from `rounding_rtol`; scale-aware, so values near 0
    do not demand more than the tensor's precision allows)."""
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)}, reference {tuple(reference.shape)}"
    err = float((ours.double() - reference.double()).abs().max())
    scale = float(reference.double().abs().max())
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} > {rtol:.3g} x {scale:.3g} (relative {err / scale:.3g})"


# Evaluation metrics of maps that agree to float32 rounding (another batch composition, sharded vs whole, cached vs
# direct). Measured on the smoke data with +-2 ulps of noise on every frozen feature: scores and image metrics move
# <= 2.4e-7 relative; pixel AUROC/AP/AUPRO, rankings of ~10^5 pixels in which rounding swaps near-ties, <= 5e-6; the
# legacy AUPRO's fixed 200-threshold grid jumps by ~1e-5 (absolute) each time a pixel crosses one of its thresholds.
# fp16 feature storage, the smallest real change tested, moves scores by 7e-5 and pixel metrics by 5e-5 to 3.5e-4.
METRIC_RTOL, METRIC_ATOL = 5e-5, 1e-7
GRID_METRICS, GRID_ATOL = ("pixel_aupro_legacy",), 1e-4


def assert_metrics_equal_to_rounding(ours, reference) -> None:
    """Two results frames (ssvp_core.metrics.evaluate.results_frame) of maps that agree to float32 rounding."""
    import pandas as pd

    for rows, rtol, atol in ((~ours.metric.isin(GRID_METRICS), METRIC_RTOL, METRIC_ATOL),
                             (ours.metric.isin(GRID_METRICS), 0.0, GRID_ATOL)):
        pd.testing.assert_frame_equal(ours[rows].reset_index(drop=True),
                                      reference[rows.to_numpy()].reset_index(drop=True),
                                      check_exact=False, rtol=rtol, atol=atol)
