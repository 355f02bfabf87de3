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
Two scoring loops compute the same numbers:
- packed (default where it applies): the requests of a batch are concatenated into one
  row of N tokens, no padding, position ids restarting at 0 for each request, and the
  attention kinds of softpick_bench.models.attention get cu_seq_lens_q/k (transformers'
  FlashAttentionKwargs) so each request attends causally to itself only (Triton cu_seqlens
  path on CUDA, one request at a time through the reference on CPU). No (N, N) or
  (B, T, T) mask exists (models.attention.packed_attention_mask). The next batch is built
  and launched before the previous one's results are copied back, so the GPU never waits
  on Python between batches. Applies to Llama-type models running one of our attention
  kinds; "auto" also keeps the padded loop when attention hooks (KV or probability
  quantization) are set, since the packed path would apply them one request at a time.
- padded: right-padded (B, T) batches called without an attention mask, exactly like
  HFLM; our kinds build their own boolean (B, 1, T, T) causal mask.
Either way a softpick model runs softpick attention (Triton on CUDA, reference on CPU).
`BenchLM.default_packing` ("auto", "on", "off") picks the loop for instances built without
an explicit `packing` (the registered evaluators build their own; the throughput benchmark
flips it to time both loops in one run).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from softpick_bench.models.attention import (
    PLAIN_HEAD_TYPES,
    has_attention_hooks,
    packed_hidden_states,
    packing_problem,
)

PACKING_MODES = ("auto", "on", "off")


@dataclass
class _Scored:
    index: int
    inp: list[int]  # model input: (context + continuation) left-truncated, last token dropped
    cont: list[int]  # continuation tokens scored at the end of `inp`
    request_str: tuple | None


@dataclass
class _Pending:
    """A packed batch in flight: its requests, and its per-token results still on the device."""

    batch: list[_Scored]
    results: torch.Tensor  # (2, n_scored) float32: token log-probabilities, greedy flags (1.0 / 0.0)
    done: torch.cuda.Event | None


class BenchLM(HFLM):
    """HFLM around an already loaded (possibly quantized) model object."""

    default_packing = "auto"  # for instances built without `packing` (see the module docstring)

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 32,
        batch_tokens: int | None = None,
        max_length=None,
        packing: str | None = None,
    ):
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        packing = packing or type(self).default_packing
        if packing not in PACKING_MODES:
            raise ValueError(f"packing {packing!r} unknown; valid: {', '.join(PACKING_MODES)}")
        self.packing = packing
        self.batch_tokens = batch_tokens
        self.forward_calls = 0
        self.forward_tokens = 0  # padded tokens through the model, for throughput accounting
        self.real_tokens = 0  # unpadded tokens
        self.scored_tokens = 0  # continuation positions put through the vocabulary projection
        self.causal_pairs = 0  # sum over requests of L(L+1)/2: (query, key) pairs causal attention computes
        self.model_seconds = 0.0  # wall time inside the scoring loop (synchronised by the .cpu() copies)

    def packing_problem(self) -> str | None:
        """Why the packed loop cannot run on this model (None: it can)."""
        return packing_problem(self.model)

    def uses_packing(self) -> bool:
        """Whether `_loglikelihood_tokens` runs the packed loop (raises if packing='on' cannot)."""
        if self.packing == "off":
            return False
        problem = self.packing_problem()
        if self.packing == "on":
            if problem:
                raise ValueError(f"packing='on' but {problem}")
            return True
        if problem:
            return False
        return not has_attention_hooks(self.model)

    def _packs(self, reqs: list[_Scored]) -> list[list[_Scored]]:
        """Longest first; a pack grows until the request count or the token budget is reached (no padding)."""
        reqs = sorted(reqs, key=lambda r: (-len(r.inp), r.index))
        packs: list[list[_Scored]] = []
        tokens = 0
        for r in reqs:
            if packs:
                cur = packs[-1]
                fits_tokens = self.batch_tokens is None or tokens + len(r.inp) <= self.batch_tokens
                if len(cur) < self.batch_size and fits_tokens:
                    cur.append(r)
                    tokens += len(r.inp)
                    continue
            packs.append([r])
            tokens = len(r.inp)
        return packs

    def _launch_pack(self, batch: list[_Scored]) -> _Pending:
        """Build one packed row, run the model on it, start the copy of its results back (no wait)."""
        lengths = torch.tensor([len(r.inp) for r in batch])
        ends = lengths.cumsum(0)
        starts = ends - lengths
        n_tokens = int(ends[-1])
        n_cont = torch.tensor([len(r.cont) for r in batch])
        ids = torch.tensor(list(itertools.chain.from_iterable(r.inp for r in batch)))
        positions = torch.arange(n_tokens) - starts.repeat_interleave(lengths)
        # continuation rows: the last len(cont) positions of each request
        cont_start = (ends - n_cont).repeat_interleave(n_cont)
        cont_rows = cont_start + torch.arange(int(n_cont.sum())) - (n_cont.cumsum(0) - n_cont).repeat_interleave(n_cont)
        target = torch.tensor(list(itertools.chain.from_iterable(r.cont for r in batch)))
        cu = torch.cat([torch.zeros(1, dtype=torch.long), ends])
        host = torch.cat([ids, positions, cont_rows, target, cu])
        device = torch.device(self.device)
        cuda = device.type == "cuda"
        if cuda:
            host = host.pin_memory()
        dev = host.to(device, non_blocking=cuda)
        n_scored = target.numel()
        ids_d, pos_d, rows_d, target_d, cu_d = torch.split(dev, [n_tokens, n_tokens, n_scored, n_scored, len(batch) + 1])
        cu_d = cu_d.to(torch.int32)
        longest = int(lengths.max())
        model = self.model
        with torch.no_grad():
            hidden = packed_hidden_states(model, ids_d, pos_d, cu_d, longest)
            logits = model.get_output_embeddings()(hidden[rows_d]).float()
            logprobs = F.log_softmax(logits, dim=-1)
            token_lp = logprobs.gather(1, target_d[:, None]).squeeze(1)
            greedy = (logprobs.argmax(dim=-1) == target_d).float()
            results = torch.stack([token_lp, greedy])
            done = None
            if cuda:
                results = results.to("cpu", non_blocking=True)
                done = torch.cuda.Event()
                done.record()
        self.forward_calls += 1
        self.forward_tokens += n_tokens
        self.real_tokens += n_tokens
        self.scored_tokens += n_scored
        self.causal_pairs += int((lengths * (lengths + 1) // 2).sum())
        return _Pending(batch, results, done)

    @staticmethod
    def _finish_pack(pending: _Pending) -> list[tuple[float, bool]]:
        if pending.done is not None:
            pending.done.synchronize()
        token_lp, greedy = pending.results[0], pending.results[1]
        out, start = [], 0
        for r in pending.batch:
            n = len(r.cont)
            out.append((float(token_lp[start : start + n].sum()), bool(greedy[start : start + n].all())))
            start += n
        return out

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
            if getattr(model.config, "model_type", None) in PLAIN_HEAD_TYPES:
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
        bar = tqdm(total=len(reqs), disable=disable_tqdm or self.rank != 0, desc="loglikelihood requests")

        def record(batch, answers):
            for r, answer in zip(batch, answers):
                results[r.index] = answer
                if r.request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", r.request_str, answer)
            bar.update(len(batch))

        if self.uses_packing():
            start = time.perf_counter()
            pending: _Pending | None = None
            for batch in self._packs(reqs):
                launched = self._launch_pack(batch)  # queued behind the previous pack on the device
                if pending is not None:
                    record(pending.batch, self._finish_pack(pending))
                pending = launched
            if pending is not None:
                record(pending.batch, self._finish_pack(pending))
            self.model_seconds += time.perf_counter() - start
            bar.close()
            return results

        for batch in self._batches(reqs):
            start = time.perf_counter()
            answers = self._score_batch(batch)
            self.model_seconds += time.perf_counter() - start
            record(batch, answers)
        bar.close()
        return results
