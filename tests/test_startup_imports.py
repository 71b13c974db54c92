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


def test_loading_the_bundled_model_and_predicting_imports_neither_torchvision_nor_dynamo() -> None:
    """Model ready sooner: the bundled MobileNetV2 checkpoint loads and answers without them
    (torchvision's import alone was 1.9 s of the app's start-up, torch._dynamo's 1.2 s)."""
    code = ("import sys, numpy as np\n"
            "from hcviewer.inference import HypercolumnPredictor\n"
            "from hcviewer.modeling import build_person_model, save_checkpoint\n"
            "import tempfile, os\n"
            "path = os.path.join(tempfile.mkdtemp(), 'm.safetensors')\n"
            "save_checkpoint(path, build_person_model('mobilenet_v2'))\n"
            "p = HypercolumnPredictor.from_checkpoint(path, 'cpu')\n"
            "p.set_image(np.zeros((64, 80, 3), np.uint8)); p.predict([[4, 4, 60, 50]])\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
