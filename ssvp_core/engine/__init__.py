"""Training, inference and checkpoints shared by every method."""
