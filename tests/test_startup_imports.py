"""``import hcviewer.inference`` stays light: torchvision (which imports torch._dynamo, seconds
of start-up) is imported only when a backbone is built."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_predictor_imports_neither_torchvision_nor_dynamo() -> None:
    code = ("import sys, hcviewer.inference, hcviewer.modeling; "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
