"""Training paired softmax/softpick checkpoints (see command.py)."""
