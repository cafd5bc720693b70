"""Locally generated Hugging Face MoE checkpoints (random weights, trained tokenizer)."""
