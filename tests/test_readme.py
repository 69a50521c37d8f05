"""The README's Python example runs and prints what the text says."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has a Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("0 0 ") and lines[1].startswith("10 -16 ")


def test_readme_names_the_two_setup_commands_once_each():
    text = README.read_text()
    assert text.count("```bash\nmake lab\n```") == 1 and text.count("```bash\nmake test\n```") == 1
