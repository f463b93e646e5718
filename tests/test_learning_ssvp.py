"""SSVP learns something that transfers: trained on synth-a's test split, it beats the untrained model on the
held-out synth-b classes (tiny random backbones, so the absolute numbers stay low)."""
import pytest

from learning import untrained_and_trained


@pytest.mark.slow
def test_training_improves_held_out_pixel_and_image_auroc(learning_root, tmp_path):
    before, after = untrained_and_trained("ssvp", learning_root, tmp_path, "train.epochs=10")
    assert after["pixel_auroc"] >= before["pixel_auroc"] + 0.05
    assert after["image_auroc"] >= before["image_auroc"] + 0.05
