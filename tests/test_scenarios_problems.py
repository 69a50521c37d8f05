"""Scenarios, seeded problems, the cost model and the command line."""

import pytest

from thplab.__main__ import main
from thplab.costs import cost_table, tail_get_put
from thplab.problems import Problem
from thplab.scenarios import SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("level", range(11))
def test_every_scenario_runs_at_every_level(name, level):
    run = SCENARIOS[name].start(level)
    while not run.finished:
        run.step()
        run.machine.check()
    assert run.summary().startswith(SCENARIOS[name].title)


def test_scenario_table_is_deterministic_and_reads_the_model():
    a = SCENARIOS["fork-pin-split"].start(4).run_to(3)
    b = SCENARIOS["fork-pin-split"].start(4).run_to(3)
    assert a.table() == b.table()
    row = {r["subpage"]: r for r in a.counters()}
    assert row[0]["_count"] == 3 and row[5]["_mapcount"] == -1 and row[5]["pins"] == 1


def test_scenario_step_past_the_end_is_an_error():
    run = SCENARIOS["fault"].start(0)
    run.run_all()
    with pytest.raises(IndexError, match="only 1 steps"):
        run.step()


def test_fork_split_pmd_keeps_parent_pmd_only_from_level_4():
    for level, parent in ((3, "512 PTEs"), (4, "one huge PMD")):
        run = SCENARIOS["fork-split-pmd"].start(level)
        run.run_all()
        assert run.mappings()[run.pid] == parent


@pytest.mark.parametrize("seed", range(30))
def test_problems_answer_themselves_and_are_reproducible(seed):
    p = Problem.generate(seed)
    assert p.render() == Problem.generate(seed).render()
    assert p.check(p.answer)[0]
    assert not p.check(p.answer + 1)[0]
    assert p.render().startswith(f"ARG seed {seed}")


def test_problem_check_explains_bad_input_and_rejects_unknown_kind():
    p = Problem.generate(1, kind="split_result", level=10)
    assert "whole number" in p.check("lots")[1]
    with pytest.raises(ValueError, match="kind must be one of"):
        Problem.generate(1, kind="nope")


def test_split_result_problem_matches_the_pin_rule():
    for seed in range(20):
        p = Problem.generate(seed, kind="split_result", level=10)
        assert p.answer == (-16 if p.args["pinned"] else 0)
        assert Problem.generate(seed, kind="split_result", level=0).answer == 0


def test_tail_get_put_costs_old_vs_new():
    old, new4 = tail_get_put(0), tail_get_put(4)
    assert old["get_page"]["atomic"] > new4["get_page"]["atomic"] == 1
    assert old["put_page"]["compound_lock"] == 1 and "compound_lock" not in new4["put_page"]
    assert "level" in cost_table((0, 10)).splitlines()[0]


def test_cli_scenario_problem_race_costs(capsys):
    assert main(["scenario", "fault", "--level", "0"]) == 0
    assert "thp_fault_alloc +1" in capsys.readouterr().out
    assert main(["problem", "--seed", "3", "-c"]) == 0
    assert "ANSWER" in capsys.readouterr().out
    assert main(["race", "put-page-vs-split", "--level", "10"]) == 0
    assert "results:" in capsys.readouterr().out
    assert main(["costs"]) == 0
    assert "get_page" in capsys.readouterr().out


def test_cli_live_recorded(capsys):
    assert main(["live", "--recorded"]) == 0
    assert "RECORDED" in capsys.readouterr().out


def test_v1_split_refuses_a_thp_whose_head_is_unmapped_but_tails_are_mapped():
    """page_get_anon_vma() checks page_mapped(head) only (kernel-semantics §2.2, patch 06)."""
    from thplab import Machine
    from thplab.invariants import held_pages

    m = Machine.boot("16M", patches=10)
    pid = m.spawn()
    addr = m.mmap(pid, 2 << 20)
    m.touch(pid, addr, 2 << 20)
    head = int(m.thp_heads()[0])
    m.munmap(pid, addr, 4096)                       # subpage 0 only
    assert m.split_huge_page(head) == -16
    assert held_pages(m) == {head: 1}
    m.munmap(pid, addr + 4096, 4096)                # still compound, still refused
    assert m.split_huge_page(head) == -16 and m.vmstat["thp_split_page_failed"] == 2
    m.check()


def test_non_kernel_arguments_raise_bad_argument_and_walk_refuses_bad_addresses():
    from thplab import BadAddress, BadArgument, Machine

    m = Machine.boot("8M", nodes=2)
    pid = m.spawn()
    with pytest.raises(BadArgument, match="use letters r, w, x"):
        m.mmap(pid, 4096, prot="q")
    with pytest.raises(BadArgument, match="does not exist"):
        m.move_pages(pid, [0], 5)
    with pytest.raises(BadAddress, match="user space"):
        m.walk(pid, [-1])
    with pytest.raises(BadArgument):
        Machine.boot("3M")


def test_map_thp_returns_a_pmd_mapped_thp_or_minus_one_without_one():
    from thplab import Machine

    m = Machine.boot("8M")
    pid, addr, head = m.map_thp()
    assert m.walk(pid, [addr])["level"][0] == 2 and m.mem_map["_count"][head] == 1
    m.check()
    m = Machine.boot("8M", thp="never")
    pid, addr, head = m.map_thp()
    assert head == -1 and (m.walk(pid, [addr, addr + (1 << 20)])["level"] == 1).all()
    m.check()


def test_cli_lists_every_simplification_marked_in_the_source(capsys):
    import re
    from pathlib import Path

    from thplab.__main__ import simplifications

    root = Path(__file__).resolve().parents[1] / "thplab"
    marked = sum(len(re.findall("SIMPLIFICATION" + ":", p.read_text()))
                 for p in root.rglob("*.py") if p.name != "__main__.py")
    notes = simplifications()
    assert len(notes) == marked >= 10
    assert all(text and not text.startswith('"') for _, text in notes)
    assert main(["simplifications"]) == 0
    assert "thplab/smp.py" in capsys.readouterr().out


def test_cli_patch_prints_card_functions_and_diffs(capsys):
    assert main(["patch", "4", "--diff"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[PATCH, RFC 04/10] thp: PMD splitting without splitting compound page")
    assert "replaces: " in out and "__split_huge_pmd()" in out and "removes:  __split_huge_page()" in out
    # the diff shows code only: no decorator lines, no model-only helpers (series/text.py)
    assert "@P04.replaces" not in out and "check_refcounts" not in out and "\n+" in out
    with pytest.raises(SystemExit):
        main(["patch", "11"])


def test_check_number_reveals_nothing_until_answered_and_reads_hex_and_errno():
    from thplab.problems import NOT_ANSWERED, check_number

    for empty in (None, "", "   "):
        ok, msg = check_number(empty, 513, "because 513")
        assert not ok and msg == NOT_ANSWERED and "513" not in msg
    assert check_number("-EBUSY", -16, "")[0] and check_number("-ebusy", -16, "")[0]
    assert check_number("0x201", 513, "")[0] and check_number("5_13", 513, "")[0]
    ok, msg = check_number("0x200", 513, "why")
    assert not ok and "you said 0x200" in msg and "says 0x201" in msg
    ok, msg = check_number(0, -16, "why")
    assert "-16 (-EBUSY)" in msg
    ok, msg = check_number(1536, 1024, "why", diagnoses={1536: "1536: you counted the unmapped subpages."})
    assert "you counted the unmapped subpages" in msg
    ok, msg = check_number("int('x')", 1, "")
    assert not ok and "invalid literal" not in msg and "Please answer" in msg
