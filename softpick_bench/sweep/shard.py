"""Split a plan's work between processes by hand (`sweep --shard i/n`), e.g. several processes on
one GPU or one per GPU, all writing the same result folder.

The unit is one (checkpoint, quant spec) with all its tasks, the runner's own unit of work; units
go round-robin in plan order, so every shard gets a share of each method. Shards never share a
cell, so they never write the same record.
"""

from __future__ import annotations

from softpick_bench.errors import ConfigError


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def shard_cells(cells: list, index: int, count: int) -> list:
    """The cells of units index, index + count, index + 2 count, ... (units in plan order)."""
    units: dict[tuple, int] = {}
    for cell in cells:
        units.setdefault((cell.checkpoint, cell.quant.to_json()), len(units))
    return [c for c in cells if units[(c.checkpoint, c.quant.to_json())] % count == index]
