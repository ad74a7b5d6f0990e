"""Inference-time remappings of RoPE positions, continued: STRING and Mesa-Extrapolation.

Like ReRoPE, Self-Extend and DCA (:mod:`posenc.pe.other`), both are applied zero-shot to a RoPE-trained model
(``applies_to = "rope"``), compute a few RoPE score passes with different position indices, combine them with
``torch.where`` and override :meth:`~posenc.pe.base.PositionalEncoding.logits`. Their indices, cos/sin and
branch masks are built once per forward by ``prepare``. Conventions: rel = i − j (query minus key), logits
``q·kᵀ/√d``, consecutive-pair RoPE with float32 angles; positions are token indices (integer-valued).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posenc.pe.base import PositionContext, register
from posenc.pe.other import _RemappedRoPE, _scores
from posenc.pe.rope import rotate_pairs

__all__ = ["STRING", "MesaExtrapolation", "mesa_split", "stair_positions"]


@register
class STRING(_RemappedRoPE):
    """STRING, ShifTed Rotary position embeddING (An, Zhang, Zhong, Li, Gong, Luo, Xu, Kong, ICLR 2025, arXiv
    2410.18745, §4, Eq. 4 and Algorithm 1; released code HKUNLP/STRING, ``string_for_llama.py``).

    Relative positions at the tail of a RoPE model's training distribution are rarely trained, so at inference
    STRING replaces every distance rel ≥ S (``shift``) by rel − S + W (``local_window``), re-using well-trained
    small positions for far keys while the W nearest keys stay nearest:

        rel'_ij = i − j            if i − j < S   (sliding-window pass: plain RoPE)
                = i − j − S + W    if i − j ≥ S   (shifted pass: the query rotated at i − S + W)

    The released code runs the two passes with FlashAttention windows that both include the diagonal i − j = S
    and merges them by their log-sum-exps, so that key enters the softmax twice (at rel S and at rel W); this is
    reproduced exactly, as one logit log(e^a + e^b). The released code also multiplies cos and sin by
    ``attention_factor`` 0.1·ln 2 + 1 ("to recover" the sharpness STRING smooths, as in YaRN), for every
    position and length, so logits scale by its square even when no distance reaches S.

    Defaults: S = ⌊L/3⌋ (the paper's S = L/3; the README's int(0.33·L)), L = ``train_len``. The paper sets W = 128
    for every model (TinyLlama 2K to Llama 3.1 128K) and asks for W ≥ 32 and W ≪ S; at this project's training
    lengths W defaults to max(1, ⌊L/16⌋), TinyLlama-2K's ratio 128/2048. STRING targets inputs within the
    training length; beyond it the shifted distances still exceed L − S + W. Relative (rel' is a function of i − j).
    """

    id = "string"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 shift: int | None = None, local_window: int | None = None,
                 attention_factor: float | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        shift = train_len // 3 if shift is None else shift
        local_window = max(1, train_len // 16) if local_window is None else local_window
        attention_factor = 0.1 * math.log(2.0) + 1.0 if attention_factor is None else attention_factor
        self._check("shift", shift, isinstance(shift, int) and not isinstance(shift, bool) and 1 <= shift <= train_len,
                    f"an int in [1, train_len={train_len}]")
        self._check("local_window", local_window, isinstance(local_window, int) and not isinstance(local_window, bool)
                    and 0 <= local_window < shift, f"an int in [0, shift={shift})")
        self._check("attention_factor", attention_factor, isinstance(attention_factor, (int, float))
                    and not isinstance(attention_factor, bool) and math.isfinite(attention_factor)
                    and attention_factor > 0, "None or a finite number > 0")
        self.shift, self.local_window, self.factor = shift, local_window, float(attention_factor)

    def attention_scaling(self, seq_len: int) -> float:
        return self.factor  # multiplies cos and sin of both passes (the released code's cached cos/sin)

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        self.put_rotation(ctx, "string_q", ctx.q_pos - float(self.shift - self.local_window), "q")
        rel = self.rel(ctx)
        self.put_map(ctx, "string_near", rel < self.shift)
        self.put_map(ctx, "string_both", rel == self.shift)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        near, _, kr = self.plain(q, k, ctx)
        far = _scores(self.rot(q, ctx, "string_q"), kr)
        out = torch.where(ctx.get("string_near"), near, far)
        return torch.where(ctx.get("string_both"), torch.logaddexp(near, far), out)


def mesa_split(length: int, train_len: int, first: int, last: int, slack: int) -> tuple[int, int, int]:
    """Mesa-Extrapolation's DynamicSplit (the paper's Algorithm 2): ``(first, chunk, n_middle)``.

    For an input of I = ``length`` tokens, max training length T, first-chunk length F and last-chunk length L:
    R = I − L − F, N = ⌊R/(T − F)⌋, M = R mod (T − F); the middle chunks have C = T − F tokens when M < M_max
    (``slack``; N of them), else C = ⌊R/(N + 1)⌋ (N + 1 of them). The last chunk takes the rest (≥ L tokens).
    """
    rest = length - last - first
    if rest <= 0:
        return first, max(1, train_len - first), 0
    n, m = divmod(rest, train_len - first)
    if m < slack:
        return first, train_len - first, n
    return first, rest // (n + 1), n + 1


def stair_positions(k_pos: Tensor, anchor: float, start: int, width: int) -> Tensor:
    """Key positions of the Stair PE (the paper's Eq. 3), anchored at the last query a = ``anchor``: a key at
    distance d = a − j keeps its position when d ≤ N (``start``); otherwise it moves to a − (N + ⌈(d − N)/E⌉)
    (E = ``width``), so that the last query sees the stair distance W(d) = N + ⌈(d − N)/E⌉ exactly."""
    d = anchor - k_pos
    stair = start + torch.ceil((d - start) / width)
    return torch.where(d <= start, k_pos, anchor - stair)


@register
class MesaExtrapolation(_RemappedRoPE):
    """Mesa-Extrapolation (Ma, Liu, Liu, Ma, NeurIPS 2024, arXiv 2410.15859, §4, Algorithms 1–2 and Appendix B.2;
    released code soacker/Mesa-Extrapolation, ``methods/mesa_extrapolation.py``).

    Inputs of I ≤ T tokens (T = ``train_len``) are plain RoPE. Longer inputs are cut by DynamicSplit
    (:func:`mesa_split`) into a first chunk of F tokens, middle chunks of C tokens and a last chunk:

    * the first chunk attends causally to itself (plain RoPE);
    * every middle chunk attends to the first chunk and causally to itself, with its tokens re-positioned right
      after the first chunk (F, F + 1, …): a "chunk-based triangular attention matrix" whose distances stay < T;
    * the last chunk attends to every earlier token with the Stair PE: keys at distance d ≤ N from the last token
      keep their positions, farther keys are compressed to N + ⌈(d − N)/E⌉ (:func:`stair_positions`; N =
      ``stair_position``, E = ``stair_width``). As in the paper's implementation (Appendix B.2), the positions are
      assigned to keys and queries so that the last token follows the Stair PE exactly and the other tokens of
      the last chunk approximately (a query at t sees its keys shifted by the same amount).

    The released code also scales the queries by max(1, log(n)/log T), n the query's 1-based index
    (``log_scale``; 1 inside the first and middle chunks, which never exceed T). It anchors the stair at a
    boundary that moves with the input length ((I − 1) mod C) and floors where the paper's Eq. 3 takes a
    ceiling; the paper's fixed N and ceiling are used here.

    Defaults: the paper's settings for 4K models (Appendix B.2: F = 100, L = 512, M_max = 200, N = 512, E = 50)
    with the lengths scaled to T: F = max(1, ⌊T/40⌋), L = ⌊T/8⌋, M_max = ⌊T/20⌋, N = ⌊T/8⌋, and E = 50. The
    evaluation here scores every token of a window, so every chunk's outputs are used, not only the last one's
    as in the paper's prefill-then-generate use.
    """

    id = "mesa_extrapolation"
    relative = False

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 first_chunk: int | None = None, last_chunk: int | None = None, split_slack: int | None = None,
                 stair_position: int | None = None, stair_width: int = 50, log_scale: bool = True) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        first_chunk = max(1, train_len // 40) if first_chunk is None else first_chunk
        last_chunk = max(1, train_len // 8) if last_chunk is None else last_chunk
        split_slack = train_len // 20 if split_slack is None else split_slack
        stair_position = max(1, train_len // 8) if stair_position is None else stair_position

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        self._check("first_chunk", first_chunk, is_int(first_chunk) and 1 <= first_chunk < train_len,
                    f"an int in [1, train_len={train_len})")
        self._check("last_chunk", last_chunk, is_int(last_chunk) and 1 <= last_chunk <= train_len - first_chunk,
                    f"an int in [1, train_len − first_chunk = {train_len - first_chunk}]")
        self._check("split_slack", split_slack, is_int(split_slack) and split_slack >= 0, "an int >= 0")
        self._check("stair_position", stair_position, is_int(stair_position) and stair_position >= 1, "an int >= 1")
        self._check("stair_width", stair_width, is_int(stair_width) and stair_width >= 1, "an int >= 1")
        self._check("log_scale", log_scale, isinstance(log_scale, bool), "a bool")
        self.first_chunk, self.last_chunk, self.split_slack = first_chunk, last_chunk, split_slack
        self.stair_position, self.stair_width, self.log_scale = stair_position, stair_width, log_scale

    def chunks(self, pos: Tensor, length: int) -> tuple[Tensor, Tensor, int]:
        """For positions ``pos`` of an input of ``length`` tokens: chunk id (0 first, 1.. middle, −1 last), the
        local position (chunks after the first re-positioned to start at F), and the last chunk's start."""
        first, chunk, n_mid = mesa_split(length, self.train_len, self.first_chunk, self.last_chunk, self.split_slack)
        last_start = first + n_mid * chunk
        p = pos.to(torch.float32)
        mid = torch.clamp(torch.floor((p - first) / chunk), min=0) + 1
        cid = torch.where(p < first, torch.zeros_like(p), torch.where(p >= last_start, torch.full_like(p, -1.0), mid))
        local = torch.where(cid > 0, first + p - (first + (cid - 1) * chunk), p)
        return cid, local, last_start

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        length = ctx.length
        ctx.put("mesa_active", length > self.train_len)
        if length <= self.train_len:
            return
        cq, local_q, _ = self.chunks(ctx.q_pos, length)
        ck, local_k, _ = self.chunks(ctx.k_pos, length)
        self.put_rotation(ctx, "mesa_local_q", local_q, "q")
        self.put_rotation(ctx, "mesa_local_k", local_k, "k")
        anchor = float(length - 1)
        self.put_rotation(ctx, "mesa_stair_k", stair_positions(ctx.k_pos.float(), anchor, self.stair_position,
                                                                self.stair_width), "k")
        last_q = cq < 0
        ctx.put("mesa_last_q", last_q[:, None], q_dim=0)
        scale = torch.ones_like(ctx.q_pos, dtype=torch.float32)
        if self.log_scale:
            scale = torch.where(last_q, (torch.log(ctx.q_pos.float() + 1) / math.log(self.train_len)).clamp(min=1.0),
                                scale)
        ctx.put("mesa_qscale", scale[:, None], q_dim=0)
        # Non-last queries see the first chunk and their own chunk; last-chunk queries see everything.
        visible = (ck[None, :] == 0) | (cq[:, None] == ck[None, :]) | last_q[:, None]
        self.put_map(ctx, "mesa_visible", visible)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        if not ctx.get("mesa_active"):
            return self.plain(q, k, ctx)[0]
        chunked = _scores(self.rot(q, ctx, "mesa_local_q"), self.rot(k, ctx, "mesa_local_k"))
        qs = (q.float() * ctx.get("mesa_qscale")).to(q.dtype)
        stair = _scores(rotate_pairs(qs, ctx.get("cos_q"), ctx.get("sin_q")), self.rot(k, ctx, "mesa_stair_k"))
        out = torch.where(ctx.get("mesa_last_q"), stair, chunked)
        return out.masked_fill(~ctx.get("mesa_visible"), float("-inf"))
