

def test_the_model_never_imports_the_diagrams():
    import subprocess
    import sys

    code = ("import sys, thplab, thplab.machine, thplab.scenarios, thplab.races, thplab.trace, thplab.problems, "
            "thplab.invariants, thplab.lessons.foundations; "
            "assert 'thplab.diagrams' not in sys.modules and 'drawsvg' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
