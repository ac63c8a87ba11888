"""FluxAudio: the flow-matching transformer of Resonate, over a 1-D latent sequence.

Layout (names follow the released network, so its state dict loads key for key):

- ``audio_input_proj``: conv (k=7) -> SELU -> SwiGLU conv feed-forward; latents ``(B, T, C)`` in.
- ``text_input_proj``: linear -> SwiGLU feed-forward on the text encoder's token features.
- ``text_cond_proj``: the same on the pooled text feature: the global condition, added to the
  timestep embedding ``t_embed``; every block is modulated by it (adaLN-zero: shift, scale, gate).
- ``joint_blocks``: MMDiT blocks: latent and text tokens keep their own weights (latent: conv
  output projection and conv feed-forward, k=3; text: linear) and attend jointly; QK-norm (RMSNorm
  per head); rotary position embedding on the latent tokens and, with positions of their own, on
  the text tokens. The last text block only modulates (its output is never used), as in SD3.
- ``fused_blocks``: single-stream DiT blocks on the latent tokens.
- ``final_layer``: adaLN (shift, scale) -> conv (k=7) -> velocity ``(B, T, C)``.
- The timestep embedding takes t in [0, 1] as it is (t = 1 is noise), ``[cos, sin]`` of 128
  frequencies; q/k/v are split from the fused projection interleaved (``(h d j)``).
- Buffers: ``latent_mean``/``latent_std`` (the codec's latent statistics: the network works on
  normalised latents, and ``unnormalize`` must be applied before decoding), and
  ``empty_string_feat``/``empty_string_feat_c`` (the text features of the empty prompt, the
  unconditional input of classifier-free guidance and of condition dropout).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FluxAudioConfig:
    """Sizes of a FluxAudio network. ``fluxaudio_470m`` and ``fluxaudio_mini`` give the two used here."""

    latent_dim: int = 40
    """Channels of the codec's latent."""
    latent_seq_len: int = 430
    """Latent frames of the longest clip (10 s for the 470M model); shorter sequences also work."""
    text_dim: int = 1024
    """Width of the text encoder's token features."""
    text_c_dim: int = 1024
    """Width of the pooled text feature."""
    text_seq_len: int = 77
    """Text tokens (padded / cut to this)."""
    hidden_dim: int = 448
    """Transformer width."""
    num_heads: int = 7
    """Attention heads (head width = hidden_dim / num_heads)."""
    depth: int = 16
    """Joint (MMDiT) blocks."""
    fused_depth: int = 36
    """Single-stream (DiT) blocks after the joint ones."""
    mlp_ratio: float = 4.0
    """Feed-forward width before the SwiGLU 2/3 and rounding."""
    multiple_of: int = 256
    """Feed-forward width is rounded up to a multiple of this."""
    rope_base: float = 10000.0
    """Rotary embedding base."""
    input_activation: str = "selu"
    """Activation after the audio input conv: ``selu`` (the released network) or ``silu``."""
    timestep_scale: float = 1.0
    """t in [0, 1] is multiplied by this before its sinusoidal embedding (1: the released network)."""
    qkv_layout: str = "interleaved"
    """How the fused q/k/v projection splits: ``interleaved`` (``(h d j)``: q, k, v innermost, the
    released network) or ``blocked`` (``(j h d)``: a q block, a k block, a v block)."""
    text_rope: bool = True
    """Rotary embedding on the text tokens too, positions 0..L-1 of their own (the released network)."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon (torch's default, the released network's)."""
    qk_norm_eps: float | None = None
    """RMSNorm epsilon of the QK-norm (None: float32's machine epsilon, torch's default)."""

    @property
    def ffn_dim(self) -> int:
        hidden = int(2 * self.hidden_dim * self.mlp_ratio / 3)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def to_dict(self) -> dict:
        return asdict(self)


LEGACY_FUNCTION = {
    "input_activation": "silu",
    "timestep_scale": 1000.0,
    "qkv_layout": "blocked",
    "text_rope": False,
    "norm_eps": 1e-6,
    "qk_norm_eps": 1e-6,
}
"""The function this project's networks computed before they matched the released code; the mini
world's checkpoints were trained with it, and configs saved without these fields mean it."""


# -- pieces --------------------------------------------------------------------------------------
class MLP(nn.Module):
    """SwiGLU feed-forward: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ConvMLP(nn.Module):
    """SwiGLU feed-forward with 1-D convolutions along the sequence; ``(B, T, D)`` in and out."""

    def __init__(self, dim: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.w1 = nn.Conv1d(dim, hidden, kernel_size, padding=pad, bias=False)
        self.w2 = nn.Conv1d(hidden, dim, kernel_size, padding=pad, bias=False)
        self.w3 = nn.Conv1d(dim, hidden, kernel_size, padding=pad, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        return self.w2(F.silu(self.w1(x)) * self.w3(x)).transpose(1, 2)


class SeqConv(nn.Conv1d):
    """A Conv1d applied to ``(B, T, D)`` sequences (same length out)."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int) -> None:
        super().__init__(dim_in, dim_out, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def rope_frequencies(length: int, head_dim: int, base: float, device: torch.device) -> torch.Tensor:
    """Complex rotations ``(length, head_dim // 2)`` for rotary position embedding."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(B, H, T, head_dim)`` by ``rot`` ``(T, head_dim // 2)`` (in float32)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


class SelfAttention(nn.Module):
    """The q/k/v projection with per-head RMS QK-norm; attention itself is done by the caller (joint)."""

    def __init__(self, dim: int, num_heads: int, cfg: FluxAudioConfig) -> None:
        super().__init__()
        self.num_heads, self.interleaved = num_heads, cfg.qkv_layout == "interleaved"
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = nn.RMSNorm(dim // num_heads, eps=cfg.qk_norm_eps)
        self.k_norm = nn.RMSNorm(dim // num_heads, eps=cfg.qk_norm_eps)

    def qkv_heads(self, x: torch.Tensor, rot: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        b, t, d = x.shape
        h = self.num_heads
        if self.interleaved:  # '(h d j)': each head's q, k, v values side by side, innermost
            q, k, v = self.qkv(x).view(b, t, h, d // h, 3).permute(4, 0, 2, 1, 3)
        else:  # '(j h d)'
            q, k, v = self.qkv(x).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if rot is not None:
            q, k = apply_rope(q, rot), apply_rope(k, rot)
        return q, k, v


class Block(nn.Module):
    """One stream of a transformer block with adaLN-zero modulation.

    ``kernel_size`` 3 makes the output projection and the feed-forward convolutional (latent
    tokens); 1 makes them linear (text tokens). ``pre_only``: only the attention inputs are made
    (the last joint block's text stream, whose outputs are never used).
    """

    def __init__(self, cfg: FluxAudioConfig, kernel_size: int, pre_only: bool = False) -> None:
        super().__init__()
        dim, num_heads, ffn_dim = cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=cfg.norm_eps)
        self.attn = SelfAttention(dim, num_heads, cfg)
        if not pre_only:
            self.linear1 = SeqConv(dim, dim, kernel_size) if kernel_size > 1 else nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=cfg.norm_eps)
            self.ffn = ConvMLP(dim, ffn_dim, kernel_size) if kernel_size > 1 else MLP(dim, ffn_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, (2 if pre_only else 6) * dim))

    def pre_attention(
        self, x: torch.Tensor, c: torch.Tensor, rot: torch.Tensor | None
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        qkv = self.attn.qkv_heads(modulate(self.norm1(x), mods[0], mods[1]), rot)
        return qkv, mods

    def post_attention(
        self, x: torch.Tensor, out: torch.Tensor, mods: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + self.linear1(out) * gate_msa
        return x + self.ffn(modulate(self.norm2(x), shift_mlp, scale_mlp)) * gate_mlp

    def forward(self, x: torch.Tensor, c: torch.Tensor, rot: torch.Tensor | None) -> torch.Tensor:
        (q, k, v), mods = self.pre_attention(x, c, rot)
        return self.post_attention(x, _attend(q, k, v), mods)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention; heads merged back: ``(B, T, D)``."""
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).flatten(2)


class JointBlock(nn.Module):
    """MMDiT block: latent and text streams with their own weights attend over both together."""

    def __init__(self, cfg: FluxAudioConfig, pre_only: bool) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = Block(cfg, kernel_size=3)
        self.text_block = Block(cfg, kernel_size=1, pre_only=pre_only)

    def forward(
        self,
        latent: torch.Tensor,
        text: torch.Tensor,
        c: torch.Tensor,
        rot: torch.Tensor,
        text_rot: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        (lq, lk, lv), lmods = self.latent_block.pre_attention(latent, c, rot)
        (tq, tk, tv), tmods = self.text_block.pre_attention(text, c, text_rot)
        n = latent.shape[1]
        out = _attend(torch.cat([lq, tq], 2), torch.cat([lk, tk], 2), torch.cat([lv, tv], 2))
        latent = self.latent_block.post_attention(latent, out[:, :n], lmods)
        if not self.pre_only:
            text = self.text_block.post_attention(text, out[:, n:], tmods)
        return latent, text


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding ``[cos, sin]`` of ``scale * t`` (256 dims) -> MLP."""

    def __init__(self, dim: int, scale: float, frequency_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.frequency_dim, self.max_period, self.scale = frequency_dim, max_period, scale
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(
            -math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = self.scale * t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.conv = SeqConv(dim, out_dim, 7)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(self.norm(x), shift, scale))


# -- the network ---------------------------------------------------------------------------------
class FluxAudio(nn.Module):
    """Predicts the flow velocity ``noise - data`` of normalised latents ``(B, T, latent_dim)``."""

    def __init__(self, config: FluxAudioConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d, h, f = cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim
        if d % h or (d // h) % 2:
            raise ValueError(f"hidden_dim {d} must split into {h} heads of even width")
        activations = {"selu": nn.SELU, "silu": nn.SiLU}
        if cfg.input_activation not in activations or cfg.qkv_layout not in ("interleaved", "blocked"):
            raise ValueError(
                f"input_activation must be selu or silu and qkv_layout interleaved or blocked, got "
                f"{cfg.input_activation!r}, {cfg.qkv_layout!r}"
            )
        act = activations[cfg.input_activation]
        self.audio_input_proj = nn.Sequential(SeqConv(cfg.latent_dim, d, 7), act(), ConvMLP(d, f, 7))
        self.text_input_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), MLP(d, f))
        self.text_cond_proj = nn.Sequential(nn.Linear(cfg.text_c_dim, d), MLP(d, f))
        self.t_embed = TimestepEmbedder(d, cfg.timestep_scale)
        self.joint_blocks = nn.ModuleList(
            JointBlock(cfg, pre_only=i == cfg.depth - 1) for i in range(cfg.depth)
        )
        self.fused_blocks = nn.ModuleList(Block(cfg, kernel_size=3) for _ in range(cfg.fused_depth))
        self.final_layer = FinalLayer(d, cfg.latent_dim, cfg.norm_eps)
        self.register_buffer("latent_mean", torch.zeros(1, 1, cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(1, 1, cfg.latent_dim))
        self.register_buffer("empty_string_feat", torch.zeros(cfg.text_seq_len, cfg.text_dim))
        self.register_buffer("empty_string_feat_c", torch.zeros(cfg.text_c_dim))
        self._rot_cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def initialize_weights(self) -> FluxAudio:
        """Xavier linears, and adaLN-zero: every modulation and the output start at zero, so the
        untrained network is the identity on its residual stream and predicts zero velocity."""

        def xavier(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(xavier)
        for block in [
            *(b.latent_block for b in self.joint_blocks),
            *(b.text_block for b in self.joint_blocks),
            *self.fused_blocks,
            self.final_layer,
        ]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.conv.weight)
        nn.init.zeros_(self.final_layer.conv.bias)
        return self

    # latents <-> the network's normalised space
    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.latent_mean) / self.latent_std

    def unnormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """Back to the codec's latent space: always before decoding (the released code forgets it)."""
        return latent * self.latent_std + self.latent_mean

    def _rot(self, length: int, device: torch.device) -> torch.Tensor:
        key = (length, device)
        if key not in self._rot_cache:
            cfg = self.config
            self._rot_cache[key] = rope_frequencies(
                length, cfg.hidden_dim // cfg.num_heads, cfg.rope_base, device
            )
        return self._rot_cache[key]

    def forward(
        self, latent: torch.Tensor, t: torch.Tensor, text_f: torch.Tensor, text_f_c: torch.Tensor
    ) -> torch.Tensor:
        """Velocity at time ``t`` ``(B,)`` of normalised latents ``(B, T, C)`` given text token
        features ``(B, L, text_dim)`` and pooled features ``(B, text_c_dim)``."""
        c = (self.t_embed(t) + self.text_cond_proj(text_f_c))[:, None]
        x = self.audio_input_proj(latent)
        text = self.text_input_proj(text_f)
        rot = self._rot(x.shape[1], x.device)
        text_rot = self._rot(text.shape[1], x.device) if self.config.text_rope else None
        for block in self.joint_blocks:
            x, text = block(x, text, c, rot, text_rot)
        for block in self.fused_blocks:
            x = block(x, c, rot)
        return self.final_layer(x, c)

    def empty_text(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty prompt's features, for ``batch`` rows (the unconditional branch)."""
        return (
            self.empty_string_feat.expand(batch, -1, -1),
            self.empty_string_feat_c.expand(batch, -1),
        )


def fluxaudio_470m() -> FluxAudio:
    """The paper's configuration (``fluxaudio_m_44k``, text features of FLAN-T5-large: 1024 wide):
    468.3M parameters, the released state-dict layout key for key. Build it on the meta device
    (``with torch.device("meta"):``) to count or inspect without allocating."""
    return FluxAudio(FluxAudioConfig())


MINI_CONFIG = FluxAudioConfig(
    **LEGACY_FUNCTION,  # what the shipped resonate-mini checkpoints were trained with
    latent_dim=32,  # MelCodec's 32 mel bands
    latent_seq_len=126,  # 4 s at 16 kHz, hop 512
    text_dim=128,  # clap-mini's text tower
    text_c_dim=128,
    text_seq_len=32,
    hidden_dim=96,
    num_heads=3,
    depth=2,
    fused_depth=3,
    mlp_ratio=2.0,
    multiple_of=32,
)


def fluxaudio_mini(config: FluxAudioConfig = MINI_CONFIG) -> FluxAudio:
    """The mini world's configuration: the same architecture, small enough to train on 2 CPU cores."""
    return FluxAudio(config)
