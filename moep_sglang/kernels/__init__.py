"""GPU kernel settings moep-sglang ships: fused-MoE Triton configs tuned for prefill batches."""
