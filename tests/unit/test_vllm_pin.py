"""deliberate runs on vLLM's serving internals: the installed vLLM must be the pinned release."""

import re
from pathlib import Path

import vllm

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_installed_vllm_is_the_pinned_release():
    pins = set(re.findall(r'"vllm(?:-cpu)?==([^"]+)"', PYPROJECT.read_text()))
    assert len(pins) == 1, f"the cpu and gpu extras must pin one vLLM release, found {pins}"
    pinned = pins.pop()
    assert vllm.__version__.split("+")[0] == pinned, (
        f"vLLM {vllm.__version__} is installed but deliberate is pinned to {pinned}: "
        f"reinstall with `make clean && make test` or pip install the pinned engine.")
