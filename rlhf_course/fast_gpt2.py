"""GPT-2's forward pass written out, nanoGPT-style, on a transformers GPT-2's own weights.

transformers' ``GPT2Model.forward`` is general: output recorders, cache classes, a 4-D mask builder,
cross-attention and gradient-checkpointing branches. For the models this course trains (a few million
parameters on a CPU) that generality costs more than the arithmetic: a forward pass of the tiny GPT-2
is mostly Python. ``hidden_states`` below is the same function (embeddings, pre-LayerNorm blocks of
causal self-attention and an MLP, a final LayerNorm), written as the dozen tensor operations per
block it is, with a key/value cache of fixed size for sampling (``KVCache``: written in place, never
re-allocated). On a CPU, GPT-2 small's float32 products run on oneDNN's kernels rather than MKL's
(``_OneDNNLinear``). ``install`` puts it behind a model's own ``forward``, so every caller, a learner's
reward model included, gets it; anything it does not cover (inputs_embeds, an external cache,
attention outputs, every layer's hidden states) falls through to transformers. tests/test_tiny_lm.py
checks outputs and gradients against transformers on left-padded batches.
"""
from __future__ import annotations

import functools
import platform
import types

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions


def supports(trunk) -> bool:
    """True for a transformers GPT2Model (or the trunk of a GPT2LMHeadModel) with the plain GPT-2 design."""
    config = getattr(trunk, "config", None)
    return (type(trunk).__name__ == "GPT2Model" and not config.add_cross_attention
            and not config.reorder_and_upcast_attn and not getattr(trunk, "gradient_checkpointing", False))


# --------------------------------------------------------------------------------------------------
# Large float32 products on a CPU through oneDNN
# --------------------------------------------------------------------------------------------------
ONEDNN = True
"""False: every product on torch's default path (``capstone bench --no-onednn``, for the comparison)."""
ONEDNN_MIN_WEIGHT = 1 << 19
"""Weights with at least this many entries (every matrix of GPT-2 small, none of the tiny GPT-2's)
go through oneDNN; below it the call's fixed cost outweighs the gain (the tiny model's decoding
steps were 20 % slower through it)."""


def _computes_linear(op) -> bool:
    """True if ``op(x, W, b, "none", [], "")`` returns x Wᵀ + b in float32 for a small product, W a
    transposed view (as the blocks' weights are passed); False on a wrong answer or any error."""
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((5, 24), (7, 24), (7,)))
    try:
        with torch.no_grad():
            y = op(x.float(), w.float().t().contiguous().t(), b.float(), "none", [], "")
    except Exception:                                   # noqa: BLE001 (a private operator: any failure)
        return False
    return (isinstance(y, torch.Tensor) and y.shape == (5, 7) and y.dtype == torch.float32
            and torch.allclose(y.double(), x @ w.t() + b, atol=1e-4))


@functools.cache
def onednn_kernel():
    """torch's oneDNN linear kernel (``torch.ops.mkldnn._linear_pointwise``, the one torch.compile
    emits for CPU linears) on x86-64, if this build has it and it passes ``_computes_linear``; else None.
    A private operator, so anything unexpected leaves every product on torch's default path.
    """
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return op if op is not None and _computes_linear(op) else None


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where ``conv1d`` and ``lm_head`` run oneDNN: ``ONEDNN`` on, float32 on a CPU outside autocast,
    a weight of at least ``ONEDNN_MIN_WEIGHT`` entries, and a kernel that passed its probe."""
    return (ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and weight.numel() >= ONEDNN_MIN_WEIGHT and not torch.is_autocast_enabled("cpu")
            and onednn_kernel() is not None)


class _OneDNNLinear(torch.autograd.Function):
    """y = x Wᵀ + b for x (N, in), with W (out, in); ``stored_in_out``: the parameter holds Wᵀ (a GPT-2
    Conv1D's (in, out) weight), which oneDNN reads in place, so no transposed copy is ever made.

    Why: torch's float32 products on a CPU call MKL, which on this course's AMD machines runs GPT-2
    small's 336 × 768 × 3072 product at 140–180 GFLOP/s on 2 threads where oneDNN reaches 180–210
    (``capstone.measure_matmul_flops``, both kernels). Backward: dx = dy W, and the weight's gradient
    dyᵀ x through oneDNN for the blocks' (in, out) weights but through MKL for the LM head (for its
    50,257 × 272 × 768 product MKL was faster: 153 vs 196 ms).
    """

    @staticmethod
    def forward(ctx, x, param, bias, stored_in_out: bool):
        ctx.save_for_backward(x, param)
        ctx.stored_in_out, ctx.has_bias = stored_in_out, bias is not None
        weight = param.t() if stored_in_out else param                  # (out, in), a view
        return onednn_kernel()(x, weight, bias, "none", [], "")        # (N, out), contiguous

    @staticmethod
    def backward(ctx, dy):
        x, param = ctx.saved_tensors
        op = onednn_kernel()
        weight = param.t() if ctx.stored_in_out else param              # (out, in)
        dx = d_param = d_bias = None
        if ctx.needs_input_grad[0]:
            dx = op(dy, weight.t(), None, "none", [], "")                # (N, in) = dy W
        if ctx.needs_input_grad[1]:
            if ctx.stored_in_out:
                d_param = op(x.t(), dy.t(), None, "none", [], "")        # (in, out) = xᵀ dy
            else:
                d_param = dy.t() @ x                                      # (out, in) = dyᵀ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_bias = dy.sum(0)
        return dx, d_param, d_bias, None


def conv1d(conv, x: torch.Tensor) -> torch.Tensor:
    """A transformers GPT-2 ``Conv1D`` (x W + b, W stored (in, out)) on x (..., in): through oneDNN
    where ``uses_onednn``, else the module itself."""
    if not uses_onednn(x, conv.weight):
        return conv(x)
    out = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), conv.weight, conv.bias, True)   # (rows, out)
    return out.view(*x.shape[:-1], out.shape[-1])


class KVCache:
    """Keys and values of every layer for up to ``max_length`` positions, filled left to right.

    ``length`` positions are written; the next ``hidden_states`` call writes its T positions after
    them and attends to all length + T.
    """

    def __init__(self, trunk, batch_size: int, max_length: int):
        self.max_length, self.length = max_length, 0
        self.shape = (batch_size, trunk.config.n_head, max_length, trunk.config.n_embd // trunk.config.n_head)
        self.keys: list = [None] * trunk.config.n_layer
        self.values: list = [None] * trunk.config.n_layer
        self.transposed: dict = {}                  # Conv1D -> its weight as (out, in), for decode steps

    def decode_linear(self, conv, x: torch.Tensor) -> torch.Tensor:
        """A GPT-2 Conv1D (x W + b, W stored (in, out)) on the few rows of one decoding step, on a CPU.

        Computed as (Wᵀ xᵀ + b)ᵀ with Wᵀ copied contiguous once per sampling call: with 16 rows, MKL
        streams the weights about 1.7× faster that way (GPT-2 small's 12 layers: 32 vs 54 ms a step
        on 2 threads). Same numbers up to summation order. The (rows, out) result is copied contiguous
        (a few KB): left transposed in memory, the queries made from it would send attention to
        PyTorch's slow reference kernel instead of the fused one, which wants each head's vector
        contiguous. A weight large enough for oneDNN (``uses_onednn``: GPT-2 small's) goes through it
        instead, read in place (GPT-2 small's 16 decoding steps with its head: 0.95 vs 1.31 s).
        """
        if uses_onednn(x, conv.weight):                 # reads the (in, out) weight in place: no copy
            return conv1d(conv, x)
        weight_t = self.transposed.get(conv)
        if weight_t is None:
            weight_t = self.transposed[conv] = conv.weight.detach().t().contiguous()
        rows = x.reshape(-1, x.shape[-1])
        out = torch.addmm(conv.bias[:, None], weight_t, rows.t()).t().contiguous()           # (rows, out)
        return out.view(*x.shape[:-1], out.shape[-1])

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store (B, H, T, D) keys and values at [length, length + T); return all keys and values so far."""
        if self.keys[layer] is None:                                # allocated once, in the dtype autocast gives
            self.keys[layer] = k.new_zeros(self.shape)
            self.values[layer] = v.new_zeros(self.shape)
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def _mask(attention_mask: torch.Tensor, T: int, offset: int) -> torch.Tensor:
    """(B, S) 0/1 key mask -> (B, 1, T, S) bool: query i (at position offset + i) sees real keys j ≤ it.

    A query always sees itself, so a padded query row is never empty (its softmax would be NaN; its
    output is never used).
    """
    S = attention_mask.shape[1]
    key = torch.arange(S, device=attention_mask.device)
    query = torch.arange(offset, offset + T, device=attention_mask.device)[:, None]
    return ((key <= query) & attention_mask[:, None, None, :].bool()) | (key == query)


def attention_scale(attn, head_dim: int) -> float:
    """The factor GPT-2's attention scores are multiplied by: ``attn.scaling`` where transformers has it
    (releases from March 2026 on), else what it stands for, from the config flags earlier 5.x releases read."""
    scaling = getattr(attn, "scaling", None)
    if scaling is not None:
        return scaling
    scale = head_dim ** -0.5 if attn.scale_attn_weights else 1.0
    if getattr(attn, "scale_attn_by_inverse_layer_idx", False):
        scale /= float(attn.layer_idx + 1)
    return scale


def hidden_states(trunk, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
    """The last hidden state (B, T, E) of a GPT2Model on input_ids (B, T), after the final LayerNorm.

    attention_mask (B, S) covers the cache's positions and these T (S = cache length + T; 1 = real);
    position_ids default to cache length + 0 … T − 1, as in transformers.
    """
    B, T = input_ids.shape
    offset = cache.length if cache is not None else 0
    config = trunk.config
    H, E = config.n_head, config.n_embd
    D = E // H
    if position_ids is None:
        position_ids = torch.arange(offset, offset + T, device=input_ids.device)[None]
    x = F.embedding(input_ids, trunk.wte.weight, sparse=trunk.wte.sparse) + trunk.wpe(position_ids)  # (B, T, E)
    if attention_mask is None or (offset == 0 and bool(attention_mask.all())):
        mask, causal = None, offset == 0                        # no padding: the fused causal kernel
    else:
        mask, causal = _mask(attention_mask, T, offset), False
    # one token per row, no gradient, fp32 on a CPU: a decoding step, whose products are memory-bound
    # (under bf16 autocast, oneDNN's bf16 kernels are slower on the transposed operands: 0.88 vs 0.65 s)
    decode = (cache is not None and T == 1 and input_ids.device.type == "cpu" and not torch.is_grad_enabled()
              and not torch.is_autocast_enabled("cpu"))
    linear = cache.decode_linear if decode else conv1d
    for layer, block in enumerate(trunk.h):
        attn = block.attn
        q, k, v = linear(attn.c_attn, block.ln_1(x)).split(E, dim=2)                         # (B, T, E) each
        q, k, v = (z.view(B, T, H, D).transpose(1, 2) for z in (q, k, v))                 # (B, H, T, D)
        if cache is not None:
            k, v = cache.write(layer, k, v)                                                # (B, H, S, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           scale=attention_scale(attn, D))                  # (B, H, T, D)
        x = x + linear(attn.c_proj, y.transpose(1, 2).reshape(B, T, E))
        mlp = block.mlp
        x = x + linear(mlp.c_proj, mlp.act(linear(mlp.c_fc, block.ln_2(x))))
    if cache is not None:
        cache.length += T
    return trunk.ln_f(x)


class _HeldGradient(torch.autograd.Function):
    """The identity on a weight; its backward passes the gradient on unchanged (see ``tied_head_weight``)."""

    @staticmethod
    def forward(ctx, weight):
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        return grad


def tied_head_weight(model) -> torch.Tensor:
    """The LM head's weight for one forward pass of ``model``; call it before the trunk runs and pass
    the result to ``lm_head``. The same values; only the order its gradients are summed in changes.

    Why: in a GPT-2 whose head is tied to a sparse embedding (``rlhf_ppo.use_fast_kernels``), the
    weight's gradient is the sum of the head's dense (V, E) one, which backward reaches first, and the
    embedding's sparse rows, which it reaches last. Autograd adds a sparse gradient that arrives after a
    dense one out of place: a copy of the dense gradient (154 MB for GPT-2 small: 45 ms a backward on
    2 threads). Autograd runs the newest ready node first, so a node made before the embedding lookup
    runs after it: the head's gradient waits there until the sparse rows have arrived, then autograd adds
    them into it in place. The same sum (each entry: the head's value plus the same rows, in the same
    order). Elsewhere (no gradient, untied, dense embedding, a GPU) the head's own weight.
    """
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    weight = head.weight
    if (torch.is_grad_enabled() and weight.requires_grad and weight.device.type == "cpu"
            and getattr(embed, "sparse", False) and embed.weight is weight):
        return _HeldGradient.apply(weight)
    return weight


def lm_head(head, hidden: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(N, E) hidden states -> (N, V) logits of a bias-free LM head: ``head(hidden)``, on a CPU through
    oneDNN for a large head (``uses_onednn``; GPT-2's: 272 rows in 122 vs 179 ms on 2 threads, and the
    logits come back contiguous), otherwise as (W hᵀ)ᵀ.

    The same product with the operands swapped. For GPT-2's 50,257 × 768 head, MKL runs (V × E) @ (E × N)
    about 1.5× faster than (N × E) @ (E × V)ᵀ (272 rows: 118 vs 183 ms on 2 threads; 16 rows: 21 vs 28 ms).
    The result is the transpose of a contiguous (V, N) matrix, so (N, V) with strides (1, N): a
    reduction over the vocabulary wants a contiguous copy first (``rlhf_ppo.sampling_logits`` makes
    its float32 copy contiguous). On a GPU, or for a head with a bias, ``head(hidden)``.
    ``weight``: the head's weight as ``tied_head_weight`` gave it (default ``head.weight``).
    """
    if weight is None:
        weight = head.weight
    if hidden.device.type != "cpu" or hidden.dim() != 2 or getattr(head, "bias", None) is not None:
        return head(hidden) if weight is head.weight else F.linear(hidden, weight, head.bias)
    if uses_onednn(hidden, weight):                               # (N, V), contiguous
        return _OneDNNLinear.apply(hidden, weight, None, False)
    return (weight @ hidden.t()).t()


def _forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
             position_ids=None, inputs_embeds=None, use_cache=None, **kwargs):
    """GPT2Model.forward through ``hidden_states``; what it does not cover goes to transformers."""
    unsupported = (input_ids is None or inputs_embeds is not None or token_type_ids is not None
                   or (past_key_values is not None and not isinstance(past_key_values, KVCache)) or use_cache
                   or any(kwargs.get(k) for k in ("output_attentions", "output_hidden_states", "head_mask",
                                                  "encoder_hidden_states", "cache_position"))
                   or self.training and self.config.embd_pdrop + self.config.resid_pdrop + self.config.attn_pdrop > 0)
    if unsupported:
        return self._transformers_forward(input_ids=input_ids, past_key_values=past_key_values,
                                          attention_mask=attention_mask, token_type_ids=token_type_ids,
                                          position_ids=position_ids, inputs_embeds=inputs_embeds,
                                          use_cache=use_cache, **kwargs)
    hidden = hidden_states(self, input_ids, attention_mask, position_ids, past_key_values)
    return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden, past_key_values=past_key_values)


def install(model) -> bool:
    """Route a GPT-2's trunk forward through ``hidden_states`` (idempotent); False if it is no GPT-2."""
    trunk = getattr(model, "base_model", model)
    if not supports(trunk):
        return False
    if "_transformers_forward" not in vars(trunk):
        trunk._transformers_forward = trunk.forward               # the original, bound: the fallback
        trunk.forward = types.MethodType(_forward, trunk)
    return True
