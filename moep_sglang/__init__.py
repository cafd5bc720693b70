"""moep-sglang: prefill-only serving of Mixture-of-Experts LLMs on SGLang."""

__version__ = "0.1.0"
