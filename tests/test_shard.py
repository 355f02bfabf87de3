"""`sweep --shard i/n`: shards partition a plan by unit (checkpoint x quant spec), never splitting one."""

from pathlib import Path

import pytest

from softpick_bench.config import load_config
from softpick_bench.errors import ConfigError
from softpick_bench.sweep.plan import build_plan
from softpick_bench.sweep.shard import parse_shard, shard_cells

ROOT = Path(__file__).resolve().parents[1]


def test_shards_partition_the_plan_by_unit():
    cells = build_plan(load_config(ROOT / "configs" / "quant-matrix.yaml"))
    for count in (1, 2, 3, 7):
        shards = [shard_cells(cells, i, count) for i in range(count)]
        keys = [c.key for shard in shards for c in shard]
        assert sorted(keys) == sorted(c.key for c in cells)  # every cell once
        units = [{(c.checkpoint, c.quant.label()) for c in shard} for shard in shards]
        for i in range(count):
            for j in range(i + 1, count):
                assert not units[i] & units[j]  # a unit's tasks stay together
        if count > 1:
            assert all(shards)  # round-robin: no shard left empty on a plan of many units


@pytest.mark.parametrize("bad", ["4/4", "1", "-1/2", "a/b", "1/0", ""])
def test_bad_shard_is_refused(bad):
    with pytest.raises(ConfigError, match="expected I/N"):
        parse_shard(bad)


def test_a_shard_holds_both_kinds_of_each_spec():
    """So a shard stopped half way has paired cells: softmax and softpick of one spec run together."""
    cells = build_plan(load_config(ROOT / "configs" / "quant-matrix.yaml"))
    for i in range(3):
        shard = shard_cells(cells, i, 3)
        kinds: dict = {}
        for c in shard:
            kinds.setdefault((c.pair, c.replicate, c.quant.label()), set()).add(c.kind)
        assert kinds and all(k == {"softmax", "softpick"} for k in kinds.values())


def test_units_run_pair_major(tmp_path):
    """The runner's order: spec by spec, the two kinds of the pair alternating."""
    from softpick_bench.sweep.runner import plan_units
    from softpick_bench.sweep.store import ResultStore

    config = load_config(ROOT / "configs" / "quant-matrix.yaml")
    units, _ = plan_units(config, build_plan(config), ResultStore(tmp_path), echo=lambda line: None)
    kinds = [u.group[1] for u in units]
    assert kinds[: 4] == ["softmax", "softpick", "softmax", "softpick"]
    assert all(units[i].spec == units[i + 1].spec for i in range(0, len(units), 2))
