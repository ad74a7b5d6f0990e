"""Attention changes beyond the position signal: stick-breaking weights, scale-invariant logits, head temperatures.

* :class:`StickBreaking` replaces the softmax by a stick-breaking process over the keys, from the most recent
  to the oldest; it has no positional encoding and overrides :meth:`~posenc.pe.base.PositionalEncoding.weights`
  (the one hook that turns logits into attention weights), so it always takes the explicit attention path.
* :class:`ScaleInvariantAttention` rescales and shifts the logits of an inner PE (p-RoPE) by functions of the
  distance i − j (explicit path: the scale multiplies the logits pair by pair).
* :class:`NoPEHeadScale` multiplies the logits of a NoPE model by a learned temperature per head, folded into
  the query (fast path).

Conventions: logits are ``q·kᵀ/√d`` (plus any bias of an inner PE), t = i − j ≥ 0 is the distance from the
query back to the key, positions are the model's float positions (``arange`` at evaluation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenc.pe.base import PositionalEncoding, PositionContext, register
from posenc.pe.sampling import InnerPE

__all__ = ["StickBreaking", "stick_breaking_weights", "ScaleInvariantAttention", "scale_invariant_transform",
           "NoPEHeadScale"]


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------- stick-breaking attention
def stick_breaking_weights(z: Tensor, earlier: Tensor) -> Tensor:
    """Stick-breaking attention weights (Tan et al., arXiv 2410.17980, §2): for query i and key j < i,

        A_ij = β_ij · ∏_{j<k<i} (1 − β_ik),    β_ij = σ(z_ij),

    i.e. the most recent key breaks off a fraction β of the stick, the next one a fraction of what remains,
    and so on back to the first token; rows sum to at most 1.

    ``z`` (..., T, S) are the logits, ``earlier`` (T, S) is True where key j comes strictly before query i (the
    keys must be in increasing position order). Computed in log space, as the authors' reference does:
    log A_ij = log σ(z_ij) + Σ_{k>j, k<i} log σ(−z_ik), the sum taken by a reverse cumulative sum over keys
    (exclusive, so nothing is subtracted). Returns float32 weights, 0 where ``earlier`` is False.
    """
    z = z.float()
    log_keep = F.logsigmoid(-z).masked_fill(~earlier, 0.0)  # log(1 − β) on the stick's keys, 0 elsewhere
    # Σ_{k > j} log(1 − β_ik): reverse cumulative sum shifted by one key (exclusive).
    after = log_keep.flip(-1).cumsum(-1).flip(-1)
    after = torch.cat([after[..., 1:], torch.zeros_like(after[..., :1])], dim=-1)
    return (F.logsigmoid(z) + after).exp().masked_fill(~earlier, 0.0)


@register
class StickBreaking(PositionalEncoding):
    """Stick-breaking attention (Tan, Yang, Courville, Panda, Shen, "Scaling Stick-Breaking Attention: An
    Efficient Implementation and In-depth Study", ICLR 2025, arXiv 2410.17980; code
    github.com/shawntan/stickbreaking-attention).

    No positional encoding: the logits are q·kᵀ/√d (the released kernel's ``inv_temp`` = 1/√d), and the
    softmax is replaced by :func:`stick_breaking_weights`, which attends to the keys *before* the query
    (the kernel's default ``attend_current=False``) with a built-in recency order. The weights of a row sum to
    at most 1; what is left of the stick (``1 − Σ_j A_ij``) is handled by ``remainder``:

    * ``"drop"`` (default): it is discarded, as in the ``flash-linear-attention`` layer and in the authors'
      Dolomite model at initialisation (which adds it times a learned per-head vector, initialised to 0, and
      then applies a per-head GroupNorm; both are model changes outside the PE interface and are not done);
    * ``"current"``: it goes to the current token's value, as in the authors' kernel test (``o + rem·v``).

    With ``"drop"`` the first token attends to nothing and its attention output is 0.

    Overrides :meth:`weights` (explicit attention path); every row depends only on its own logits, so the
    model's query chunks are exact. The kernel is O(T²) like attention; this materialises (B, H, T, S).
    """

    id = "stick_breaking"

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, remainder: str = "drop") -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("remainder", remainder, remainder in ("drop", "current"), "'drop' or 'current'")
        self.remainder = remainder

    def weights(self, att: Tensor, allowed: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        same = ctx.k_pos[None, :] == ctx.q_pos[:, None]  # (T, S): the query's own key
        w = stick_breaking_weights(att, allowed & ~same)
        if self.remainder == "current":
            w = w + (1.0 - w.sum(-1, keepdim=True)) * (allowed & same)
        return w

    def extra_repr(self) -> str:
        return super().extra_repr() + f", remainder={self.remainder!r}"


# ---------------------------------------------------------------------- scale-invariant attention
def scale_invariant_transform(t: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """(a_t, m_t) of scale-invariant attention (Anson, Wang, Aitchison, arXiv 2505.17083, Eq. 16), float32.

    a_t = √(2[log(t/τ + 1) − log α + β/α]),  m_t = −a_t² + β/α, with the paper's boundary condition
    a_0 = 1, m_0 = 0, which gives α = β = e^0.5, hence a_t² = 2 log(t/τ + 1) + 1 and m_t = −2 log(t/τ + 1).
    ``t`` ≥ 0 is the distance back from the query (t = 0 the query's own token).
    """
    log1 = torch.log1p(t.float().clamp(min=0) / tau)
    return torch.sqrt(2.0 * log1 + 1.0), -2.0 * log1


@register
class ScaleInvariantAttention(InnerPE):
    """Scale-invariant attention (Anson, Wang, Aitchison, "Scale-invariant attention", NeurIPS 2025,
    arXiv 2505.17083, Eq. 14 and 16), around an inner PE (p-RoPE by default: "scale-invariant p-RoPE").

    The score S = q·kᵀ/√d of the inner PE (rotated, plus any bias) of a key t = i − j tokens back becomes

        L = a_t · S + m_t,    a_t = √(2 log(t/τ + 1) + 1),    m_t = −2 log(t/τ + 1),

    chosen so that, for Gaussian scores, the expected total attention in every range [t, tΔ) and its
    unnormalised negentropy stay constant as t grows (scale-invariant total attention and sparsity). The one
    hyperparameter τ (``tau``) sets the local region left almost unscaled; the paper's sweep finds τ = 10 best.

    The paper pairs it with p-RoPE at an "effective base of 1024" for a 128-dimensional head; the inner
    default here is this project's ``p_rope`` (p = 0.75, base 10⁴: lowest kept frequency 10⁻³, close to it).
    The scale multiplies the logits pair by pair, so this PE overrides :meth:`logits` (explicit path). With a
    relative inner PE (the default) the logits depend only on i − j.
    """

    id = "scale_invariant_attn"
    relative = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, tau: float = 10.0,
                 inner: str = "p_rope", inner_kwargs: dict[str, object] | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("tau", tau, _is_num(tau) and tau > 0, "a finite number > 0")
        self._init_inner(inner, inner_kwargs)
        self.tau = float(tau)

    def prepare(self, ctx: PositionContext) -> None:
        super().prepare(ctx)  # the inner PE's tensors, in the child context

        def transform(c: PositionContext) -> Tensor:  # (2, T, S): a_t and m_t stacked, one sliceable tensor
            return torch.stack(scale_invariant_transform(c.q_pos[:, None] - c.k_pos[None, :], self.tau))

        ctx.put_lazy("sia_a_m", transform, q_dim=-2, k_dim=-1)

    def logits(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> Tensor:
        inner = self.inner_context(ctx)
        q, k = self.inner.rotate(q, k, inner, layer)
        s = (q.float() @ k.float().transpose(-2, -1)) * q.size(-1) ** -0.5
        b = self.inner.bias(inner, layer)
        if b is not None:
            s = s + b
        a, m = ctx.get("sia_a_m").unbind(0)
        return a * s + m

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}"


# ---------------------------------------------------------------------- head temperatures for NoPE
@register
class NoPEHeadScale(PositionalEncoding):
    """Head-based attention scale for NoPE (Wang, Ji, Wu, Yan, Gui, Zhang, Huang, Wang, "Length Generalization
    of Causal Transformers without Position Encoding", Findings of ACL 2024, arXiv 2404.12224; code
    github.com/AntNLP/nope_head_scale).

    A NoPE model's attention spreads out ("distraction") beyond its training length; each head h gets a
    temperature λ_h, logits λ_h·q·kᵀ/√d, folded into the query (fast path). As in the released code the
    scales are one per layer and head (``num_layers`` > 1; one shared set when 1), initialised to 1.6
    (``scale_init``, the released run script's ``--softmax_scale``), and kept ≥ 1 (``scale_min``, its
    ``--scale_lb 1``: attention is only sharpened; here a clamp in the forward). The paper tunes only these
    scales on a NoPE model at the target length (200 steps at 4× the training length in the released script);
    this PE is applied to a NoPE-trained model (``applies_to = "nope"``), and the experiment fine-tunes the
    whole model, not the scales alone.
    """

    id = "nope_headscale"
    applies_to = "nope"
    learnable = True

    def __init__(self, *, head_dim: int, num_heads: int, train_len: int, scale_init: float = 1.6,
                 scale_min: float | None = 1.0, num_layers: int = 1) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, train_len=train_len)
        self._check("scale_init", scale_init, _is_num(scale_init) and scale_init > 0, "a finite number > 0")
        self._check("scale_min", scale_min, scale_min is None or (_is_num(scale_min) and scale_min >= 0),
                    "None or a finite number >= 0")
        self._check("num_layers", num_layers, isinstance(num_layers, int) and not isinstance(num_layers, bool)
                    and num_layers >= 1, "an int >= 1")
        self.scale_min = None if scale_min is None else float(scale_min)
        self.num_layers = num_layers
        self.scale = nn.Parameter(torch.full((num_layers, num_heads), float(scale_init)))

    def head_scale(self, layer: int = 0) -> Tensor:
        """λ_h of ``layer`` (H,), float32, clamped at ``scale_min``."""
        if self.num_layers > 1 and not 0 <= layer < self.num_layers:
            raise ValueError(f"{self.id}: layer {layer} >= hyperparameter 'num_layers' ({self.num_layers})")
        s = self.scale[layer if self.num_layers > 1 else 0].float()
        return s if self.scale_min is None else s.clamp(min=self.scale_min)

    def rotate(self, q: Tensor, k: Tensor, ctx: PositionContext, layer: int = 0) -> tuple[Tensor, Tensor]:
        return (q.float() * self.head_scale(layer)[:, None, None]).to(q.dtype), k
