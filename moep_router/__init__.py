"""moep-router: prefix- and true-FLOPs-aware routing of prefill-only requests to SGLang workers.

Imports no ML stack (no torch, sglang or flashinfer): tests/moep_router/test_imports.py checks it.
"""

__version__ = "0.1.0"
