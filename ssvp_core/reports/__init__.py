"""Paper-reported numbers (as data with their source), tables, figures, the HTML site and the notebook runner."""
