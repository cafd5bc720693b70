"""CPU stand-in for `sgl_kernel`.

SGLang 0.5.17 imports `sgl_kernel` on every platform, but its CPU build is not on PyPI. On CPU
(`SGLANG_USE_CPU_ENGINE=1`) SGLang runs its pure-torch `forward_native` paths and never calls
into this module on the prefill-only paths moep-sglang uses. Installed only in CPU environments
by the Makefile; listed in patches/README.md. Remove when a CPU wheel of sgl_kernel is published.
"""

__version__ = "0.4.5"


def __getattr__(name: str):
    """`from sgl_kernel import op` succeeds; calling `op` says why it cannot run here."""
    if name.startswith("__"):
        raise AttributeError(name)

    def _unavailable(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{name} was called, but this environment has only moep-sglang's CPU "
            "stand-in for sgl_kernel (no CPU build is published). This code path needs the real "
            "sglang-kernel package on a GPU machine."
        )

    _unavailable.__name__ = name
    return _unavailable
