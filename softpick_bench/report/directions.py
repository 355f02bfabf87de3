"""Which way is better for each metric, and which task metrics make the headline.

Task metrics carry lm-eval's (or our evaluator's) higher_is_better. The analysis metrics
(eval/analysis.py) carry none there: their direction is a reading of the paper, set here.
"""

from __future__ import annotations

# metric -> (direction, what the direction means); "neither" where more is not better or worse
ANALYSIS_DIRECTIONS: dict[str, tuple[str, str]] = {
    "sink_rate_0.2": ("lower", "fewer attention sinks (heads putting > 0.2 of their mass on the first token)"),
    "sink_rate_0.3": ("lower", "fewer attention sinks (heads putting > 0.3 of their mass on the first token)"),
    "kurtosis": ("lower", "fewer massive activations (Pearson kurtosis of all hidden states; 3 = Gaussian)"),
    "hidden_max": ("lower", "smaller largest hidden-state value (outliers are what low-bit grids clip)"),
    "hidden_min": ("higher", "smaller most-negative hidden-state value (closer to zero)"),
    "attn_sparsity": ("neither", "fraction of exact-zero attention weights: softpick's mechanism, not a quality; "
                      "compare each model with its own baseline"),
    "dead_heads": ("neither", "fraction of heads whose output is ~0 on 95% of tokens; softpick heads may "
                   "abstain by design, so only a change from the baseline says something"),
}

# the task metrics a researcher comes for, in headline order
PRIMARY_METRICS = ("ppl_gptq", "word_perplexity", "perplexity", "acc", "acc_norm")

NOT_COMPARABLE = {
    "hellaswag": "HellaSwag here is rebuilt from a preprocessed derivative whose text differs from lm-eval's "
    "preprocessing (softpick_bench/data/tasks/manifest.json): not comparable with published HellaSwag numbers.",
}


def direction(metric: str, higher_is_better) -> str:
    """'higher', 'lower' or 'neither'."""
    if metric in ANALYSIS_DIRECTIONS:
        return ANALYSIS_DIRECTIONS[metric][0]
    if higher_is_better is None or higher_is_better != higher_is_better:  # None or NaN
        return "neither"
    return "higher" if bool(higher_is_better) else "lower"


def higher_is_better(metric: str, recorded) -> bool | None:
    d = direction(metric, recorded)
    return None if d == "neither" else d == "higher"
