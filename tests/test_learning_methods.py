"""ViP2-CLIP and DAPO learn something that transfers to the held-out synthetic classes.

With tiny random backbones their pixel maps improve clearly; their image scores (ViP2-CLIP: top-K patch cosines,
DAPO: CLS against text) do not transfer in this setting, so only the pixel margin is asserted (the measured image
AUROCs are printed, and recorded in the README)."""
import pytest

from learning import untrained_and_trained


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vip2clip", "dapo"])
def test_training_improves_held_out_pixel_auroc(method, learning_root, tmp_path):
    before, after = untrained_and_trained(method, learning_root, tmp_path)
    assert after["pixel_auroc"] >= before["pixel_auroc"] + 0.05
