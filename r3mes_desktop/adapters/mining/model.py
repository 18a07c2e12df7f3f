"""A small transformer LM on a frozen BitNet-b1.58-style backbone with trainable LoRA.

Only the child (worker) process imports this module: it imports torch. The backbone is
generated from the base-model id (no downloads), so every miner holds the same weights;
LoRA adapters start from the round seed. Attention is written out (matmul + masked
softmax) rather than fused kernels, because it is deterministic on every device.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from r3mes_desktop.adapters.mining.presets import ModelPreset


def backbone_seed(base_model_id: str) -> int:
    return int.from_bytes(hashlib.sha256(b"r3mes-backbone:" + base_model_id.encode()).digest()[:8])


def _ternarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58: absmean scale, then round-and-clip to {-1, 0, +1}."""
    scale = weight.abs().mean().clamp(min=1e-8)
    return (weight / scale).round().clamp(-1, 1), scale


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """8-bit per-token absmax quantization with a straight-through estimator."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    quantized = (x * scale).round().clamp(-128, 127) / scale
    return x + (quantized - x).detach()


class BitLinear(nn.Module):
    """Frozen ternary linear layer; gradients flow to its input through the STE."""

    weight: torch.Tensor
    ternary: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, generator: torch.Generator):
        super().__init__()
        latent = torch.randn(out_features, in_features, generator=generator)
        ternary, scale = _ternarize(latent / math.sqrt(in_features))
        self.register_buffer("ternary", ternary.to(torch.int8))
        self.register_buffer("scale", scale)
        # The dequantized weight is what the matmul uses; kept to avoid rebuilding it per call.
        self.register_buffer("weight", ternary * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(quantize_activations(x), self.weight)


class LoRALinear(nn.Module):
    """BitLinear plus a trainable low-rank update: W x + (alpha / r) B A x."""

    def __init__(self, base: BitLinear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        out_features, in_features = base.weight.shape[0], base.weight.shape[1]
        self.base = base
        bound = 1.0 / math.sqrt(in_features)
        a = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base: torch.Tensor = self.base(x)
        return base + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class Block(nn.Module):
    def __init__(self, p: ModelPreset, backbone: torch.Generator, lora: torch.Generator):
        super().__init__()
        self.n_heads = p.n_heads

        def proj(i: int, o: int) -> LoRALinear:
            return LoRALinear(BitLinear(i, o, backbone), p.lora_rank, p.lora_alpha, lora)

        self.q = proj(p.d_model, p.d_model)
        self.k = proj(p.d_model, p.d_model)
        self.v = proj(p.d_model, p.d_model)
        self.o = proj(p.d_model, p.d_model)
        self.up = proj(p.d_model, p.d_ff)
        self.down = proj(p.d_ff, p.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = _rms_norm(x)
        q, k, v = (
            m(h).view(b, t, self.n_heads, -1).transpose(1, 2) for m in (self.q, self.k, self.v)
        )
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        att = att.masked_fill(mask[:t, :t], float("-inf")).softmax(dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        out: torch.Tensor = x + self.down(F.gelu(self.up(_rms_norm(x))))
        return out


class TinyLM(nn.Module):
    embedding: torch.Tensor
    mask: torch.Tensor

    def __init__(self, preset: ModelPreset, *, base_model_id: str, lora_seed: int):
        super().__init__()
        backbone = torch.Generator().manual_seed(backbone_seed(base_model_id))
        lora = torch.Generator().manual_seed(lora_seed)
        self.preset = preset
        self.register_buffer(
            "embedding", torch.randn(preset.vocab_size, preset.d_model, generator=backbone)
        )
        self.layers = nn.ModuleList(Block(preset, backbone, lora) for _ in range(preset.n_layers))
        self.head = LoRALinear(
            BitLinear(preset.d_model, preset.vocab_size, backbone),
            preset.lora_rank,
            preset.lora_alpha,
            lora,
        )
        causal = torch.ones(preset.seq_len, preset.seq_len, dtype=torch.bool).triu(1)
        self.register_buffer("mask", causal)
        for name, param in self.named_parameters():
            param.requires_grad_("lora_" in name)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = F.embedding(tokens, self.embedding)
        for layer in self.layers:
            x = layer(x, self.mask)
        logits: torch.Tensor = self.head(_rms_norm(x))
        return logits

    def lora_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable adapters by stable name (the keys of the serialized update)."""
        return {n: p for n, p in self.named_parameters() if "lora_" in n}
