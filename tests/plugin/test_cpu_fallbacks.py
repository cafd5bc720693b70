import torch

from moep_sglang.plugin.cpu_fallbacks import gate_sigmoid_mul_add


def test_gate_sigmoid_mul_add_matches_the_kernel_docstring():
    h = torch.randn(5, 8)  # [num_tokens, hidden]
    w = torch.randn(8)  # [hidden]
    shared = torch.randn(5, 8)
    final = torch.randn(5, 8)
    expected = final + torch.sigmoid(h @ w).unsqueeze(1) * shared

    def never(*_):
        raise AssertionError("the Triton kernel must not run on CPU tensors")

    gate_sigmoid_mul_add(never, h, w, shared, final)
    assert torch.allclose(final, expected)
