"""The README's Python code runs as written (the API tour)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_python_blocks():
    assert _python_blocks(), "README.md: expected at least one ```python block (the API tour)"


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index, monkeypatch):
    monkeypatch.chdir(ROOT)  # the tour names configs/ relative to the repository
    code = _python_blocks()[index]
    namespace: dict = {"__name__": "readme"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    # The tour's own results are real values, not placeholders.
    if "people" in namespace:
        import aehg

        assert isinstance(namespace["people"], aehg.Instances)
        assert namespace["people"].num_parts == namespace["heat"].shape[1]


def test_readme_yaml_configs_load(tmp_path):
    from aehg.config import load_config

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    assert blocks, "README.md: expected the custom keypoint set's YAML example"
    for i, text in enumerate(blocks):
        path = tmp_path / f"block{i}.yaml"
        path.write_text(text)
        cfg = load_config(path)  # every key known, every type right
        assert cfg.data.flip_map is not None  # the example states its flip map
