"""A test-only backend whose quantizer kills its process (os.abort: SIGABRT), as a native crash would.

Loaded through SOFTPICK_BENCH_BACKENDS=abort_backend (with tests/plugins on the path), so the child
processes of `--executor process` register it too.
"""

import os

from softpick_bench.quant.base import WeightQuantizer, register


@register
class AbortQuantizer(WeightQuantizer):
    name = "abort_test"
    bits = frozenset({4})

    def apply(self, model, spec, ctx):
        os.abort()
