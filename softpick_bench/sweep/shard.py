"""Split a plan's work between processes by hand (`sweep --shard i/n`), e.g. several processes on
one GPU or one per GPU, all writing the same result folder.

The unit is one (checkpoint, quant spec) with all its tasks, the runner's own unit of work. Both
kinds of one (pair, replicate, spec) go to the same shard, and those go round-robin in plan order:
every shard gets a share of each method, and each shard's cells are paired as it goes. Shards
never share a cell (a checkpoint in two pairs runs in the shard of its first pair), so they never
write the same record.
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
    """The cells whose (pair, replicate, spec) is number index, index + count, ... in plan order."""
    slots: dict[tuple, int] = {}  # (pair, replicate, spec) -> its position in plan order
    unit_slot: dict[tuple, int] = {}  # (checkpoint, spec) -> the slot it runs in
    for cell in cells:
        spec = cell.quant.to_json()
        slot = slots.setdefault((cell.pair, cell.replicate, spec), len(slots))
        unit_slot.setdefault((cell.checkpoint, spec), slot)
    return [c for c in cells if unit_slot[(c.checkpoint, c.quant.to_json())] % count == index]
