"""`prompts.round_as_released`: prompt tokens rounded through float16 as AdaCLIP's and AnomalyCLIP's releases insert
them (`.half()`, then concatenated into a float32 stream), in forward and in backward, and the switch that turns it
off (`options.prompt_rounding`). References: NumPy's IEEE float16 conversion, and autograd run on the releases'
pattern written out here (a float32 stream concatenated with `tokens.half()`). Float16 conversion is exactly specified
(round to nearest, ties to even), so these comparisons are bitwise."""
import numpy as np
import pytest
import torch

from ssvp_core.errors import ConfigError
from ssvp_core.methods import method_spec
from ssvp_core.prompts import round_as_released

# ordinary values, a tie between two float16 neighbours (ties to even), the edges of the float16 range
EDGES = [0.1, -1 / 3, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504.0, 65519.0, 65520.0, -7e4, 2 ** -24, 2 ** -25, 3 * 2 ** -26,
         1e-9]


def numpy_fp16(values) -> torch.Tensor:
    with np.errstate(over="ignore"):  # overflow to inf is part of what is compared
        return torch.from_numpy(np.asarray(values, dtype=np.float32).astype(np.float16).astype(np.float32))


def test_forward_rounds_to_the_nearest_float16():
    x = torch.cat([torch.tensor(EDGES), torch.randn(1000) * 0.02])
    y = round_as_released(x, "fp16")
    assert y.dtype == torch.float32
    assert torch.equal(y, numpy_fp16(x.numpy()))
    assert y[4] == 65504 and y[5] == 65504 and torch.isinf(y[6]) and torch.isinf(y[7])  # overflow from 65520 on
    assert y[8] == 2 ** -24 and y[9] == 0 and y[10] == 2 ** -24 and y[11] == 0  # the smallest subnormal, ties to even
    assert y[2] == 1 and y[3] == 1 + 2 ** -9  # ties to even
    assert not torch.equal(y[12:], x[12:])  # random values move


def test_backward_is_the_releases_cast_then_concatenation():
    """The release: `torch.cat([stream, tokens.half()])` with a float32 stream (promoted to float32); the gradient
    reaching `tokens` is the incoming float32 gradient rounded through float16. Ours must give the same values and the
    same gradient, also when the inserted tokens are an expanded parameter (one rounding per copy, then summed)."""
    torch.manual_seed(0)
    stream = torch.randn(3, 4, 8)
    weight = torch.cat([torch.tensor(EDGES[:8]) * 1e-3, torch.randn(3 * 6 * 8 - 8) * 1e-3]).view(3, 6, 8)
    weight[0, 4, :4] = torch.tensor([1e-8, 3e-8, 2 ** -25, 7e4])  # gradients that underflow, tie, overflow
    param = torch.randn(2, 8) * 0.02
    theirs_p, ours_p = param.clone().requires_grad_(), param.clone().requires_grad_()
    theirs = torch.cat([stream, theirs_p.expand(3, -1, -1).half()], 1)
    ours = torch.cat([stream, round_as_released(ours_p.expand(3, -1, -1), "fp16")], 1)
    assert theirs.dtype == ours.dtype == torch.float32 and torch.equal(ours, theirs)
    (theirs * weight).sum().backward()
    (ours * weight).sum().backward()
    assert torch.equal(ours_p.grad, theirs_p.grad)
    per_copy = numpy_fp16(weight[:, 4:].numpy())  # the incoming gradient of each copy, rounded through float16
    assert torch.isinf(per_copy[0, 0, 3]) and per_copy[0, 0, 0] == 0  # the gradient overflows and underflows too
    assert torch.equal(theirs_p.grad, per_copy.sum(0))
    assert not torch.equal(theirs_p.grad, weight[:, 4:].sum(0))  # the rounding is visible


def test_none_passes_values_and_gradients_through():
    p = (torch.randn(5, 8) * 0.02).requires_grad_()
    w = torch.randn(5, 8) * 1e-3
    y = round_as_released(p, "none")
    assert torch.equal(y, p)
    (y * w).sum().backward()
    assert torch.equal(p.grad, w)


def test_bad_choice_is_named():
    with pytest.raises(ValueError, match="prompt_rounding='bf16': choose fp16"):
        round_as_released(torch.zeros(2), "bf16")
    for method in ("adaclip", "anomalyclip"):
        spec = method_spec(method)
        assert spec.options_from({}).prompt_rounding == "fp16"  # the released behaviour is the default
        assert spec.options_from({"prompt_rounding": "none"}).prompt_rounding == "none"
        with pytest.raises(ConfigError, match="prompt_rounding='bf16' is not a valid choice; choose one of fp16, none"):
            spec.options_from({"prompt_rounding": "bf16"})
