"""ssvp_core: SSVP and the zero-shot anomaly detection methods it is compared with.

Modules, one job each:
  errors      the exception family users can act on
  io          atomic file writes
  config      dataclass configs and the paper / smoke presets
  weights     resolve backbone weights (hub tag, file, folder, HF cache) and fail fast offline
  backbones   frozen CLIP (open_clip) and DINOv3 (timm) feature taps
  prompts     learnable-token prompts through the frozen CLIP text encoder
  methods     SSVP, ViP2-CLIP, DAPO and the Table-1 baselines behind one Detector interface
  data        benchmark readers, synthetic benchmark, verification, torch Dataset
  metrics     exact ranking metrics and AUPRO, per-class evaluation
  engine      training, inference, checkpoints
  reports     paper-reported numbers, tables, figures, the HTML site and the notebook runner
"""

__version__ = "0.1.0"
