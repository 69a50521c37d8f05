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


def test_readme_documents_make_site_below_the_setup_commands():
    text = README.read_text()
    site = text.find("`make site`")
    assert text.find("```bash\nmake test\n```") < site < text.find("## What is inside")
    for fact in ("build/site/index.html", "SITE_OWNER", "offline", "THPLAB_LIVE=recorded"):
        assert fact in text[site:], fact
