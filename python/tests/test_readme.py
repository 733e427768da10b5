"""The README's training example runs as printed and trains."""

import re

from conftest import ROOT


def test_readme_training_example_trains():
    text = (ROOT / "README.md").read_text()
    section = text.split("### Training with the loss", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    losses = namespace["losses"]
    assert losses[-1] < 0.5 * losses[0], losses
