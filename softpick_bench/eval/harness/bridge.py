"""The model under test handed to lm-eval as is: no reload, its attention kind in force.

`BenchLM` is lm-eval's HFLM built from the model object (so tokenization, request
building, rolling windows and metrics are lm-eval's own) with one method replaced:
`_loglikelihood_tokens`, the scoring loop. The replacement computes the same numbers
(same left truncation to max_length, same continuation positions, same greedy check)
but faster:
- requests are sorted by length (longest first, as HFLM does) and batched under both a
  request count and a padded-token budget, so short requests run in large batches;
- for Llama-style models the vocabulary projection and log-softmax run only on the
  continuation positions, not on every position of every row (HFLM materialises
  B x T x vocab log-probabilities); log-softmax is taken in float32.
The model is called without an attention mask (right padding, causal), exactly like
HFLM; the kinds registered in softpick_bench.models.attention build their own boolean
causal mask, so a softpick model runs softpick attention (Triton on CUDA, reference on CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

# Model types whose CausalLM head is exactly lm_head(decoder(ids)) (no logit scaling or capping).
_PLAIN_HEAD_TYPES = ("llama",)


@dataclass
class _Scored:
    index: int
    inp: list[int]  # model input: (context + continuation) left-truncated, last token dropped
    cont: list[int]  # continuation tokens scored at the end of `inp`
    request_str: tuple | None


class BenchLM(HFLM):
    """HFLM around an already loaded (possibly quantized) model object."""

    def __init__(self, model, tokenizer, batch_size: int = 32, batch_tokens: int | None = None, max_length=None):
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        self.batch_tokens = batch_tokens
        self.forward_calls = 0
        self.forward_tokens = 0  # padded tokens through the model, for throughput accounting
        self.real_tokens = 0  # unpadded tokens
        self.scored_tokens = 0  # continuation positions put through the vocabulary projection
        self.causal_pairs = 0  # sum over requests of L(L+1)/2: (query, key) pairs causal attention computes
        self.model_seconds = 0.0  # wall time inside the scoring loop (synchronised by the .cpu() copies)

    def _batches(self, reqs: list[_Scored]) -> list[list[_Scored]]:
        """Longest first; a batch grows until the request count or the padded-token budget is reached."""
        reqs = sorted(reqs, key=lambda r: (-len(r.inp), r.index))
        batches: list[list[_Scored]] = []
        for r in reqs:
            if batches:
                cur = batches[-1]
                fits_tokens = self.batch_tokens is None or (len(cur) + 1) * len(cur[0].inp) <= self.batch_tokens
                if len(cur) < self.batch_size and fits_tokens:
                    cur.append(r)
                    continue
            batches.append([r])
        return batches

    def _continuation_logits(self, ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Float logits at positions (rows[i], cols[i]) of the batch `ids`."""
        model = self.model
        with torch.no_grad():
            if getattr(model.config, "model_type", None) in _PLAIN_HEAD_TYPES:
                hidden = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
                return model.get_output_embeddings()(hidden[rows, cols]).float()
            return model(input_ids=ids, use_cache=False).logits[rows, cols].float()

    def _score_batch(self, batch: list[_Scored]) -> list[tuple[float, bool]]:
        width = len(batch[0].inp)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r.inp)] = torch.tensor(r.inp)
        rows = torch.cat([torch.full((len(r.cont),), i) for i, r in enumerate(batch)])
        cols = torch.cat([torch.arange(len(r.inp) - len(r.cont), len(r.inp)) for r in batch])
        target = torch.tensor([t for r in batch for t in r.cont], device=self.device)
        logits = self._continuation_logits(ids.to(self.device), rows.to(self.device), cols.to(self.device))
        logprobs = F.log_softmax(logits, dim=-1)
        token_lp = logprobs.gather(1, target[:, None]).squeeze(1).cpu()
        greedy = (logprobs.argmax(dim=-1) == target).cpu()
        self.forward_calls += 1
        self.forward_tokens += ids.numel()
        self.real_tokens += sum(len(r.inp) for r in batch)
        self.scored_tokens += target.numel()
        self.causal_pairs += sum(len(r.inp) * (len(r.inp) + 1) // 2 for r in batch)
        out, start = [], 0
        for r in batch:
            n = len(r.cont)
            out.append((float(token_lp[start : start + n].sum()), bool(greedy[start : start + n].all())))
            start += n
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        reqs = []
        for index, (request_str, context_enc, continuation_enc) in enumerate(requests):
            if not context_enc or not continuation_enc or len(continuation_enc) > self.max_length:
                raise ValueError(
                    f"request {index}: context ({len(context_enc)}) and continuation ({len(continuation_enc)}) "
                    f"must be non-empty, the continuation at most max_length={self.max_length} tokens"
                )
            # HFLM's truncation: keep the last max_length + 1 tokens, the final one is only a target
            inp = (context_enc + continuation_enc)[-(self.max_length + 1) :][:-1]
            reqs.append(_Scored(index, inp, list(continuation_enc), request_str))
        results: list[tuple[float, bool] | None] = [None] * len(reqs)
        batches = self._batches(reqs)
        bar = tqdm(total=len(reqs), disable=disable_tqdm or self.rank != 0, desc="loglikelihood requests")
        for batch in batches:
            start = time.perf_counter()
            answers = self._score_batch(batch)
            self.model_seconds += time.perf_counter() - start
            for r, answer in zip(batch, answers):
                results[r.index] = answer
                if r.request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", r.request_str, answer)
            bar.update(len(batch))
        bar.close()
        return results
