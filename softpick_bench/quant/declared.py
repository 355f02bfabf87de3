"""Option values the config validates against, importable without torch or the backend libraries."""

DEFAULT_CALIBRATION = "gutenberg"  # quant.calibration.DEFAULT_SOURCE: the shipped calibration text
BNB_QUANT_TYPES = ("nf4", "fp4")  # bitsandbytes 4-bit formats (quant.bnb.QUANT_TYPES)
BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # (quant.bnb.BLOCKSIZES)
