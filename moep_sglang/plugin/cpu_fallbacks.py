"""Pure-torch fallbacks for SGLang kernels that are Triton-only but sit on CPU paths.

SGLang 0.5.17's Qwen2-MoE layer calls the Triton kernel `fused_gate_sigmoid_mul_add` whenever the
model has a shared-expert gate; Triton has no CPU driver, so the worker died on the first forward
("0 active drivers"). On CPU tensors we compute the same thing in torch.
"""

from __future__ import annotations


def gate_sigmoid_mul_add(original, hidden_states, gate_weight, shared_output, final_hidden_states):
    """AROUND elementwise.fused_gate_sigmoid_mul_add; in place, like the kernel.

    hidden_states:       [num_tokens, hidden]
    gate_weight:         [hidden]
    shared_output:       [num_tokens, hidden]
    final_hidden_states: [num_tokens, hidden], updated in place
    """
    if hidden_states.device.type != "cpu":
        return original(hidden_states, gate_weight, shared_output, final_hidden_states)
    gate = hidden_states @ gate_weight  # [num_tokens]
    final_hidden_states += gate.sigmoid().unsqueeze(1) * shared_output
    return None
