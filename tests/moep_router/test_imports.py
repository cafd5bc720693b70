import subprocess
import sys


def test_router_imports_no_ml_stack():
    code = ("import sys, moep_router.server, moep_router.cli; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'sglang', 'flashinfer', 'transformers', 'triton')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
