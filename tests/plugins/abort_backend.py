"""Test-only backends: `abort_test` kills its process (os.abort: SIGABRT), as a native crash would;
`raise_test` raises, as a failing quantizer does.

Loaded through SOFTPICK_BENCH_BACKENDS=abort_backend (with tests/plugins on the path), so the child
processes of `--executor process` and the Ray workers of `--executor ray` register it too. With
ABORT_TEST_LOG set, each attempt first appends a line (its pid and niceness) to that file, so a
test can count the retries of a crashing unit and see the priority its worker ran at.
"""

import os

from softpick_bench.quant.base import WeightQuantizer, register


@register
class AbortQuantizer(WeightQuantizer):
    name = "abort_test"
    bits = frozenset({4})

    def apply(self, model, spec, ctx):
        log = os.environ.get("ABORT_TEST_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"pid={os.getpid()} nice={os.nice(0)}\n")
        os.abort()


@register
class RaiseQuantizer(WeightQuantizer):
    name = "raise_test"
    bits = frozenset({4})

    def apply(self, model, spec, ctx):
        raise RuntimeError("raise_test always fails")
