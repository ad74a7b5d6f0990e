"""Local and global attention mixed across layers or heads: NoPE global layers with sliding-window RoPE layers
(RNoPE-SWA, SWAN-GPT), and per-head hard windows with NoPE heads (Hard-ALiBi).

All of them put position into a rotation and an additive mask, so the model keeps its fast attention path: the
window is a bias of 0 inside and −inf outside (the query's own token is always inside), built once per
forward from positions (``static_bias``). The window of w tokens keeps key j for query i iff i − j < w, as in
``transformers``' ``sliding_window_overlay`` (``kv_idx > q_idx − sliding_window``).

iRoPE (:class:`posenc.pe.other.IRoPE`, Llama 4) is the close relative: its RoPE layers attend within fixed
chunks instead of a sliding window, and its NoPE layers are the last of each group of layers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posenc.pe.base import PositionContext, register
from posenc.pe.bias import BiasPE
from posenc.pe.rope import RoPE

__all__ = ["window_bias", "RNoPESWA", "SWANGPT", "HardALiBi", "hard_alibi_bias"]


def _pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def window_bias(q_pos: Tensor, k_pos: Tensor, window: Tensor | int) -> Tensor:
    """Float32 mask: 0 where i − j < window (keys in the window, the query itself included), −inf elsewhere.

    ``window`` is an int, or a (H,) tensor of per-head windows (``inf`` for no window) giving (H, T, S);
    an int gives (T, S). Keys after the query get 0 here; the causal mask removes them.
    """
    rel = q_pos.float()[:, None] - k_pos.float()[None, :]  # (T, S)
    if isinstance(window, Tensor):
        rel = rel[None]
        window = window.float()[:, None, None]
    zero = torch.zeros((), dtype=torch.float32, device=rel.device)
    return torch.where(rel < window, zero, torch.tensor(float("-inf"), device=rel.device))


class _GlobalNoPELocalRoPE(RoPE):
    """NoPE global layers interleaved with sliding-window RoPE layers; subclasses say which layers are global.

    Hyperparameters: ``nope_every`` (one NoPE layer per group of that many layers), ``window`` (tokens seen by
    a RoPE layer, the query included) and the RoPE ``base``. The window mask is the bias of the RoPE layers;
    NoPE layers have no bias and no rotation.
    """

    relative = True  # RoPE layers depend on i − j, NoPE layers on no position at all
    static_bias = True
    bias_per_layer = True
    default_window_divisor: int = 2  # window = train_len // divisor when ``window`` is None

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 nope_every: int = 4, window: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base)
        window = max(1, train_len // self.default_window_divisor) if window is None else window
        self._check("nope_every", nope_every, _pos_int(nope_every), "an int >= 1")
        self._check("window", window, _pos_int(window), "an int >= 1")
        self.nope_every, self.window = nope_every, window

    def is_nope(self, layer: int) -> bool:
        raise NotImplementedError

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        ctx.put_lazy("window_bias", lambda c: window_bias(c.q_pos, c.k_pos, self.window)
                     .expand(self.num_heads, -1, -1), q_dim=-2, k_dim=-1)

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        return (q, k) if self.is_nope(layer) else super().rotate(q, k, ctx, layer)

    def bias(self, ctx: PositionContext, layer: int = 0) -> Tensor | None:
        return None if self.is_nope(layer) else ctx.get("window_bias")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nope_every={self.nope_every}, window={self.window}"


@register
class RNoPESWA(_GlobalNoPELocalRoPE):
    """RNoPE-SWA (Yang, Venkitesh, Talupuru, Lin, Cairuz, Blunsom, Locatelli, "Rope to Nope and Back Again: A
    New Hybrid Attention Strategy", arXiv 2501.18795, Cohere).

    Full-attention layers without positional encoding (NoPE) interleaved with RoPE layers restricted to a
    sliding window: the NoPE layers retrieve over the whole context, the windowed RoPE layers never see a
    distance beyond the window. Layer l (0-based) is NoPE when (l + 1) mod ``nope_every`` = 0, i.e. the last
    of each group of 4, as in ``transformers``' Cohere2 (Command R7B / Command A: ``sliding_window_pattern`` 4,
    RoPE applied only in the sliding layers, ``sliding_window`` 4096). The default window here is
    ``train_len // 2`` (the paper's ratio of window to training length was not verified). No inference-time
    scaling (compare :class:`SWANGPT`).
    """

    id = "rnope_swa"

    def is_nope(self, layer: int) -> bool:
        return (layer + 1) % self.nope_every == 0


@register
class SWANGPT(_GlobalNoPELocalRoPE):
    """SWAN-GPT (Puvvada, Ladhak, Akle Serrano, Hsieh, Acharya, Majumdar, Jia, Kriman, Sun, Rekesh, Ginsburg,
    "SWAN-GPT: An Efficient and Scalable Approach for Long-Context Language Modeling", arXiv 2504.08719,
    NVIDIA; EMNLP 2025 as "SWAN").

    NoPE global layers interleaved with sliding-window RoPE layers (SWA-RoPE), one global layer per group of
    ``nope_every`` = 4, the global layer *first* in each group (layer l is NoPE when l mod 4 = 0), windows of
    512 tokens for an 8K training length (default here ``train_len // 16``). At inference (the module in
    eval mode) the logits of the NoPE layers are scaled by the query position i:

        s(i) = log_a(i + a) = ln(i + a) / ln a,        a = ``log_base`` (default ``train_len``),

    folded into the query (fast path); s(0) = 1 and s grows logarithmically. The form is the one a later
    paper adopting SWAN's scaling states (HypeNet, its Eq. 11, "s_t = log_a(t + a)"); SWAN fits a on held-out
    text and its value was not verified, so a = ``train_len`` is this project's choice.
    ``inference_scaling = False`` turns the scaling off.
    """

    id = "swan_gpt"
    relative = False  # the inference-time scale depends on the absolute query position
    default_window_divisor = 16

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, base: float = 10000.0,
                 nope_every: int = 4, window: int | None = None, inference_scaling: bool = True,
                 log_base: float | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len, base=base,
                         nope_every=nope_every, window=window)
        log_base = float(train_len) if log_base is None else log_base
        self._check("inference_scaling", inference_scaling, isinstance(inference_scaling, bool), "a bool")
        self._check("log_base", log_base, isinstance(log_base, (int, float)) and not isinstance(log_base, bool)
                    and math.isfinite(log_base) and log_base > 1, "None or a finite number > 1")
        self.inference_scaling, self.log_base = inference_scaling, float(log_base)

    def is_nope(self, layer: int) -> bool:
        return layer % self.nope_every == 0

    def query_scale(self, q_pos: Tensor) -> Tensor:
        """s(i) = ln(i + a)/ln a per query (T,), float32."""
        return torch.log(q_pos.float().clamp(min=0) + self.log_base) / math.log(self.log_base)

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)
        if self.inference_scaling and not self.training:
            ctx.put("swan_scale", self.query_scale(ctx.q_pos)[:, None], q_dim=0)

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        if self.is_nope(layer) and "swan_scale" in ctx:
            return (q.float() * ctx.get("swan_scale")).to(q.dtype), k
        return super().rotate(q, k, ctx, layer)


# ---------------------------------------------------------------------- Hard-ALiBi
def hard_alibi_bias(q_pos: Tensor, k_pos: Tensor, num_heads: int, num_masked_heads: int) -> Tensor:
    """(H, T, S) float32: head h < ``num_masked_heads`` sees the h + 1 most recent tokens (i − j ≤ h), the
    other heads see everything (NoPE)."""
    windows = torch.full((num_heads,), float("inf"))
    windows[:num_masked_heads] = torch.arange(1, num_masked_heads + 1, dtype=torch.float32)
    return window_bias(q_pos, k_pos, windows.to(q_pos.device))


@register
class HardALiBi(BiasPE):
    """Hard-ALiBi (Jelassi, Brandfonbrener, Kakade, Malach, "Repeat After Me: Transformers are Better than State
    Space Models at Copying", ICML 2024, arXiv 2402.01032; code github.com/sjelassi/transformers_ssm_copy).

    No positional encoding; instead the first ``num_masked_heads`` heads of every layer get a hard window: head
    h (0-based) attends only to the tokens at distance 0..h (bias 0 there, −inf beyond), as in the released
    ``hard_alibi_model.py``, which builds each head's mask from the diagonals 0..h; the remaining heads are
    unrestricted NoPE heads. Default: half the heads (the released script's 8 of 16). The released attention
    also concatenates the last 3/4 of q and k a second time (a leftover of GPT-NeoX's partial rotary split,
    so those dimensions count twice in q·k); that quirk is not reproduced.
    """

    id = "hard_alibi"
    relative = True
    static_bias = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int,
                 num_masked_heads: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        num_masked_heads = num_heads // 2 if num_masked_heads is None else num_masked_heads
        self._check("num_masked_heads", num_masked_heads,
                    isinstance(num_masked_heads, int) and not isinstance(num_masked_heads, bool)
                    and 0 <= num_masked_heads <= num_heads, f"an int in [0, num_heads={num_heads}]")
        self.num_masked_heads = num_masked_heads

    def compute_bias(self, ctx: PositionContext) -> Tensor:
        return hard_alibi_bias(ctx.q_pos, ctx.k_pos, self.num_heads, self.num_masked_heads)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_masked_heads={self.num_masked_heads}"
