"""The reference decoder-only Transformer: pre-LN, causal, nanoGPT-sized, any positional encoding.

Position enters only through the PE object (:class:`posenc.pe.base.PositionalEncoding`):

* ``pe.positions`` gives float positions (T,), and the causal mask is built from them;
* ``pe.embed`` adds absolute encodings to the token embeddings;
* in every layer, ``pe.logits`` (rotation of q/k, bias on logits, or a content-dependent rule) defines
  the attention logits.

Two attention paths give the same result (a test says so): the *fast* path calls
``scaled_dot_product_attention`` with the PE's bias and the causal mask folded into one float mask; the
*explicit* path materialises ``pe.logits``. PEs that override ``logits`` always take the explicit path.
PE-wide tensors (cos/sin, bias, mask) are computed once per forward inside ``pe.scope()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenc.pe.base import PositionalEncoding, causal_mask

__all__ = ["ModelConfig", "Transformer"]


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256  # bytes as tokens
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    attn: Literal["sdpa", "explicit"] = "sdpa"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"ModelConfig: '{name}' must be a positive int, got {v!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"ModelConfig: 'd_model' ({self.d_model}) must be divisible by 'n_head' ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig: 'dropout' must be in [0, 1), got {self.dropout!r}")
        if self.attn not in ("sdpa", "explicit"):
            raise ValueError(f"ModelConfig: 'attn' must be 'sdpa' or 'explicit', got {self.attn!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, pos: Tensor, pe: PositionalEncoding) -> Tensor:
        B, T, C = x.shape
        H, D = self.cfg.n_head, self.cfg.head_dim
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)

        if self.cfg.attn == "sdpa" and not pe.overrides_logits():
            q, k = pe.rotate(q, k, pos, pos, layer=self.layer)
            mask = pe.shared(("sdpa_mask", id(pos), self.layer if _bias_per_layer(pe) else 0, q.dtype),
                             lambda: _float_mask(pe, pos, self.layer, q.dtype))
            p = self.cfg.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            att = pe.logits(q, k, pos, pos, layer=self.layer)  # (B, H, T, T)
            allowed = pe.shared(("causal", id(pos)), lambda: causal_mask(pos, pos))
            att = att.float().masked_fill(~allowed, float("-inf"))
            y = self.drop(att.softmax(dim=-1).to(v.dtype)) @ v  # (B, H, T, D)

        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


def _bias_per_layer(pe: PositionalEncoding) -> bool:
    """Whether the PE's bias may differ between layers (declared by the class attribute)."""
    return bool(getattr(pe, "bias_per_layer", False))


def _float_mask(pe: PositionalEncoding, pos: Tensor, layer: int, dtype: torch.dtype) -> Tensor:
    """Causal mask (0 / −inf) plus the PE's bias, as one float mask for SDPA: (T, T) or (B or 1, H, T, T).

    Built in one pass over the bias (``where``), since at long lengths the O(H·T²) mask traffic is a large part
    of a small model's attention cost.
    """
    allowed = causal_mask(pos, pos)
    b = pe.bias(pos, pos, layer=layer)
    if b is None:
        return torch.zeros(allowed.shape, dtype=dtype, device=pos.device).masked_fill_(~allowed, float("-inf"))
    mask = torch.where(allowed, b.to(dtype), torch.tensor(float("-inf"), dtype=dtype, device=pos.device))
    if mask.dim() == 3:  # (H, T, S) -> (1, H, T, S): CPU SDPA takes a much slower path for 3-D masks
        mask = mask[None]
    return mask


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, pos: Tensor, pe: PositionalEncoding) -> Tensor:
        x = x + self.attn(self.ln1(x), pos, pe)  # pre-LN residual
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Decoder-only byte LM. ``forward(tokens, pos=None, targets=None) -> (logits, loss)``."""

    def __init__(self, cfg: ModelConfig, pe: PositionalEncoding) -> None:
        super().__init__()
        if pe.head_dim != cfg.head_dim or pe.num_heads != cfg.n_head:
            raise ValueError(
                f"positional encoding built for head_dim={pe.head_dim}, num_heads={pe.num_heads}, "
                f"but the model has head_dim={cfg.head_dim}, n_head={cfg.n_head}"
            )
        self.cfg, self.pe = cfg, pe
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # weight tying, as in GPT-2
        pe_modules = set(self.pe.modules())  # the PE initialises its own parameters
        for m in self.modules():
            if m not in pe_modules:
                self._init(m)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") and not name.startswith("pe."):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor, pos: Tensor | None = None, targets: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        B, T = tokens.shape
        if pos is None:
            pos = self.pe.positions(T, training=self.training, device=tokens.device)
        if pos.shape != (T,):
            raise ValueError(f"positions must have shape ({T},), got {tuple(pos.shape)}")
        with self.pe.scope(tokens):
            x = self.drop(self.pe.embed(self.wte(tokens), pos))  # (B, T, C)
            for block in self.blocks:
                x = block(x, pos, self.pe)
            logits = self.head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
