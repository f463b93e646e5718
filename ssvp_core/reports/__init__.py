"""Paper-reported numbers (as data with their source), tables, figures, the HTML site and the notebook runner."""

SMOKE_BANNER = ("SMOKE PROFILE: tiny random backbones and synthetic data. These numbers check that the pipeline runs; "
                "they say nothing about how good any method is.")
