"""The FT-Transformer kind (Gorishniy et al. 2021): a feature tokenizer for numeric and
categorical columns, a CLS token, pre-norm transformer blocks with a ReGLU (or GELU)
feed-forward, and a LayerNorm -> ReLU -> Linear head on the CLS token.

Prunable groups, per block: the attention heads (`block<i>.heads`, each head's query, key and
value rows and its output-projection columns) and the feed-forward hidden units
(`block<i>.ffn`; a ReGLU unit is its value and its gate together). And the token width
(`token`), one group coupled across the tokenizer, every block and the head.

Removing heads or feed-forward units that nothing reads leaves the outputs unchanged. The token
width is normalised by LayerNorm over all its channels, so removing token channels changes the
statistics the kept ones are normalised by: it is exact only against a network whose LayerNorms
normalise the kept channels (the test checks exactly that).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks.base import (
    Gate,
    PrunableGroup,
    Slice,
    SpecData,
    check_widths,
    example_inputs_for,
    interleaved,
    units,
)

KIND = "ft_transformer"
FFN_ACTIVATIONS = ("reglu", "gelu")


@dataclass(frozen=True)
class FTTransformerSpec(SpecData):
    """Args:
    d_token: the token width (every token, every block).
    heads: attention heads per block; each head is `d_head` wide.
    ffn_hidden: feed-forward hidden units per block.
    """

    d_num: int
    d_out: int
    d_token: int
    heads: tuple[int, ...]
    d_head: int
    ffn_hidden: tuple[int, ...]
    cat_cardinalities: tuple[int, ...] = ()
    ffn_activation: str = "reglu"
    dropout: float = 0.1
    kind: str = field(default=KIND)

    def __post_init__(self) -> None:
        self._as_tuples("heads", "ffn_hidden", "cat_cardinalities")
        self._check_common(KIND)
        check_widths(
            KIND, d_token=self.d_token, heads=self.heads, d_head=self.d_head, ffn=self.ffn_hidden
        )
        if len(self.heads) != len(self.ffn_hidden):
            raise TabslimInputError(
                f"ft_transformer needs one head count and one ffn width per block, but got "
                f"heads={list(self.heads)} and ffn_hidden={list(self.ffn_hidden)}"
            )
        if self.ffn_activation not in FFN_ACTIVATIONS:
            raise TabslimInputError(
                f"ffn_activation must be one of {list(FFN_ACTIVATIONS)}, "
                f"but got {self.ffn_activation!r}"
            )

    @property
    def n_blocks(self) -> int:
        return len(self.heads)

    def group_names(self) -> tuple[str, ...]:
        per_block = [(f"block{i}.heads", f"block{i}.ffn") for i in range(self.n_blocks)]
        return (*(name for pair in per_block for name in pair), "token")

    def group_sizes(self) -> tuple[int, ...]:
        per_block = [(h, f) for h, f in zip(self.heads, self.ffn_hidden, strict=True)]
        return (*(size for pair in per_block for size in pair), self.d_token)

    def with_group_sizes(self, sizes: Sequence[int]) -> FTTransformerSpec:
        sizes = [int(s) for s in sizes]
        if len(sizes) != 2 * self.n_blocks + 1:
            raise TabslimInputError(
                f"an ft_transformer of {self.n_blocks} blocks has {2 * self.n_blocks + 1} "
                f"groups, but got {len(sizes)} sizes"
            )
        return dataclasses.replace(
            self, heads=tuple(sizes[0:-1:2]), ffn_hidden=tuple(sizes[1:-1:2]), d_token=sizes[-1]
        )


class Options(BaseModel):
    """The `model:` keys of an FT-Transformer baseline in a config."""

    model_config = ConfigDict(extra="forbid", strict=True)
    d_token: int = Field(default=192, ge=1)
    n_blocks: int = Field(default=3, ge=1)
    n_heads: int = Field(default=8, ge=1)
    # ReGLU's 4/3 x d_token, as rtdl's default; a list gives one width per block.
    ffn_hidden: int | list[int] = 256
    ffn_activation: Literal["reglu", "gelu"] = "reglu"
    dropout: float = Field(default=0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> Options:
        if self.d_token % self.n_heads:
            raise ValueError(
                f"model.n_heads must divide model.d_token, but got n_heads={self.n_heads} "
                f"and d_token={self.d_token} (d_token / n_heads = "
                f"{self.d_token / self.n_heads:.4g})"
            )
        widths = self.ffn_widths()
        if len(widths) != self.n_blocks or any(w < 1 for w in widths):
            raise ValueError(
                f"model.ffn_hidden must be a width >= 1 or {self.n_blocks} of them (one per "
                f"block), but got {self.ffn_hidden}"
            )
        return self

    def ffn_widths(self) -> list[int]:
        if isinstance(self.ffn_hidden, int):
            return [self.ffn_hidden] * self.n_blocks
        return list(self.ffn_hidden)


def baseline(options: Options, **inputs: Any) -> FTTransformerSpec:
    return FTTransformerSpec(
        d_token=options.d_token,
        heads=(options.n_heads,) * options.n_blocks,
        d_head=options.d_token // options.n_heads,
        ffn_hidden=tuple(options.ffn_widths()),
        ffn_activation=options.ffn_activation,
        dropout=options.dropout,
        **inputs,
    )


class ReGLU(nn.Module):
    """(..., 2h) -> (..., h): value * relu(gate), the value in the first half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=-1)
        return value * F.relu(gate)


class FeatureTokenizer(nn.Module):
    """x_num (B, n_num), x_cat (B, n_cat) -> (B, 1 + n_num + n_cat, d_token), CLS first."""

    def __init__(self, d_num: int, cat_cardinalities: Sequence[int], d_token: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_token)
        self.cls = nn.Parameter(torch.empty(d_token).uniform_(-bound, bound))
        self.num_weight = nn.Parameter(torch.empty(d_num, d_token).uniform_(-bound, bound))
        self.num_bias = nn.Parameter(torch.empty(d_num, d_token).uniform_(-bound, bound))
        self.cat_embeddings = nn.ModuleList(nn.Embedding(c, d_token) for c in cat_cardinalities)
        n_cat = len(cat_cardinalities)
        self.cat_bias = nn.Parameter(torch.empty(n_cat, d_token).uniform_(-bound, bound))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None) -> torch.Tensor:
        batch = x_num.shape[0]
        tokens = [self.cls.expand(batch, 1, -1)]
        if self.num_weight.shape[0]:
            tokens.append(x_num.unsqueeze(-1) * self.num_weight + self.num_bias)
        if self.cat_embeddings:
            assert x_cat is not None, "this network has categorical inputs"
            embedded = [emb(x_cat[:, i]) for i, emb in enumerate(self.cat_embeddings)]
            tokens.append(torch.stack(embedded, dim=1) + self.cat_bias)
        return torch.cat(tokens, dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with explicit widths: (B, T, d_token) -> (B, T, d_token).

    Written out rather than nn.MultiheadAttention, so that heads can be removed one by one
    and the ONNX graph is plain matrix products.
    """

    def __init__(self, d_token: int, n_heads: int, d_head: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.query = nn.Linear(d_token, n_heads * d_head)
        self.key = nn.Linear(d_token, n_heads * d_head)
        self.value = nn.Linear(d_token, n_heads * d_head)
        self.dropout = nn.Dropout(dropout)
        # Each head's context (B, T, n_heads * d_head), head-major: where heads are gated.
        self.heads = nn.Identity()
        self.output = nn.Linear(n_heads * d_head, d_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_tokens, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, T, H*dh) -> (B, H, T, dh)
            return t.view(batch, n_tokens, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = self.dropout(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_head), -1))
        context = (weights @ v).transpose(1, 2).reshape(batch, n_tokens, -1)
        return self.output(self.heads(context))


class FeedForward(nn.Module):
    def __init__(self, d_token: int, d_hidden: int, activation: str, dropout: float) -> None:
        super().__init__()
        parts = 2 if activation == "reglu" else 1
        self.linear1 = nn.Linear(d_token, parts * d_hidden)
        self.activation: nn.Module = ReGLU() if activation == "reglu" else nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_hidden, d_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerBlock(nn.Module):
    def __init__(self, spec: FTTransformerSpec, block: int) -> None:
        super().__init__()
        d = spec.d_token
        self.attention_norm = nn.LayerNorm(d)
        self.attention = Attention(d, spec.heads[block], spec.d_head, spec.dropout)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = FeedForward(d, spec.ffn_hidden[block], spec.ffn_activation, spec.dropout)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x)))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class FTTransformer(nn.Module):
    """The FT-Transformer: every column a token, a CLS token read out by the head.

    ```
    x_num (B, d_num), x_cat (B, n_cat) -> tokenize -> (B, T, d_token), T = 1 + d_num + n_cat
      -> [x + Attention(LayerNorm(x)); x + FeedForward(LayerNorm(x))] per block, (B, T, d_token)
         attention: heads[i] heads of d_head; feed-forward: d_token -> ffn_hidden[i] -> d_token
      -> the CLS token (B, d_token) -> LayerNorm -> ReLU -> Linear -> (B, d_out)
    ```
    Prunable groups: each block's heads and ffn width, and `token`, coupled across everything.
    """

    def __init__(self, spec: FTTransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.tokenizer = FeatureTokenizer(spec.d_num, spec.cat_cardinalities, spec.d_token)
        # The tokens (B, T, d_token) as the first block reads them: where token width is gated.
        self.tokens = nn.Identity()
        self.blocks = nn.ModuleList(TransformerBlock(spec, i) for i in range(spec.n_blocks))
        self.head_norm = nn.LayerNorm(spec.d_token)
        self.head_activation = nn.ReLU()
        self.head = nn.Linear(spec.d_token, spec.d_out)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(self.tokenizer(x_num, x_cat))
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_activation(self.head_norm(x[:, 0])))

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return example_inputs_for(self.spec, batch_size)

    def prunable_groups(self) -> list[PrunableGroup]:
        groups = []
        spec = self.spec
        for i in range(spec.n_blocks):
            block = f"blocks.{i}"
            heads = units(spec.heads[i], spec.d_head)
            slices = [
                Slice(f"{block}.attention.{p}.{w}", 0, heads, "weight" if w == "weight" else "bias")
                for p in ("query", "key", "value")
                for w in ("weight", "bias")
            ]
            slices.append(Slice(f"{block}.attention.output.weight", 1, heads, "consumer"))
            gate = Gate(f"{block}.attention.heads", -1, heads)
            groups.append(PrunableGroup(f"block{i}.heads", spec.heads[i], tuple(slices), gate))

            width = spec.ffn_hidden[i]
            produced = interleaved(width, 2) if spec.ffn_activation == "reglu" else units(width)
            ffn = (
                Slice(f"{block}.ffn.linear1.weight", 0, produced, "weight"),
                Slice(f"{block}.ffn.linear1.bias", 0, produced, "bias"),
                Slice(f"{block}.ffn.linear2.weight", 1, units(width), "consumer"),
            )
            gate = Gate(f"{block}.ffn.activation", -1, units(width))
            groups.append(PrunableGroup(f"block{i}.ffn", width, ffn, gate))
        return [*groups, self._token_group()]

    def _token_group(self) -> PrunableGroup:
        spec = self.spec
        rows = units(spec.d_token)
        slices = [
            Slice("tokenizer.cls", 0, rows, "weight"),
            Slice("tokenizer.num_weight", 1, rows, "weight"),
            Slice("tokenizer.num_bias", 1, rows, "bias"),
            Slice("tokenizer.cat_bias", 1, rows, "bias"),
        ]
        slices += [
            Slice(f"tokenizer.cat_embeddings.{j}.weight", 1, rows, "weight")
            for j in range(len(spec.cat_cardinalities))
        ]
        norms = [
            f"blocks.{i}.{n}" for i in range(spec.n_blocks) for n in ("attention_norm", "ffn_norm")
        ]
        for norm in [*norms, "head_norm"]:
            slices += [
                Slice(f"{norm}.weight", 0, rows, "norm"),
                Slice(f"{norm}.bias", 0, rows, "state"),
            ]
        for i in range(spec.n_blocks):
            block = f"blocks.{i}"
            slices += [
                *(
                    Slice(f"{block}.attention.{p}.weight", 1, rows, "consumer")
                    for p in ("query", "key", "value")
                ),
                Slice(f"{block}.attention.output.weight", 0, rows, "weight"),
                Slice(f"{block}.attention.output.bias", 0, rows, "bias"),
                Slice(f"{block}.ffn.linear1.weight", 1, rows, "consumer"),
                Slice(f"{block}.ffn.linear2.weight", 0, rows, "weight"),
                Slice(f"{block}.ffn.linear2.bias", 0, rows, "bias"),
            ]
        slices.append(Slice("head.weight", 1, rows, "consumer"))
        return PrunableGroup("token", spec.d_token, tuple(slices), Gate("tokens", -1, rows))


def closed_form_parameters(spec: FTTransformerSpec) -> int:
    d, n_cat = spec.d_token, len(spec.cat_cardinalities)
    tokenizer = d + 2 * spec.d_num * d + sum(spec.cat_cardinalities) * d + n_cat * d
    blocks = 0
    for heads, hidden in zip(spec.heads, spec.ffn_hidden, strict=True):
        inner = heads * spec.d_head
        parts = 2 if spec.ffn_activation == "reglu" else 1
        attention = 3 * (d + 1) * inner + (inner + 1) * d
        ffn = (d + 1) * parts * hidden + (hidden + 1) * d
        blocks += 2 * 2 * d + attention + ffn
    return tokenizer + blocks + 2 * d + (d + 1) * spec.d_out
