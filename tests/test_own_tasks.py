"""The README's promise: a user's own task distribution trains and evaluates through the same code."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_of_own_tasks_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = "\n".join(blocks[:2]).replace("steps=2000, val_every=500", "steps=40, val_every=20, val_episodes=10")
    code = code.replace("count=1000", "count=20")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    episodes = namespace["fixed_episodes"](namespace["Lines"](), seed=0, count=20)
    results = namespace["evaluate"](namespace["meta"], namespace["method"], episodes, steps=[0, 10])
    # Ten steps of adaptation on a line must beat none.
    assert results[10].mean < results[0].mean
    assert (tmp_path / "runs" / "lines" / "best.pt").exists()
