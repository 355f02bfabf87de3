"""softpick-bench: paired softmax/softpick checkpoints under a matrix of quantizers."""

__version__ = "0.1.0"
