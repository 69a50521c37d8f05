"""thplab.lessons.{contract,compare,open_problems,live_lab}: the helpers of lessons 12-16."""

import re
from pathlib import Path

import numpy as np
import pytest

from thplab import Machine, costs, live, widgets
from thplab.invariants import mapping_counts
from thplab.lessons import compare, contract, live_lab, open_problems
from thplab.params import EBUSY, HPAGE_PMD_NR
from thplab.scenarios import SCENARIOS

# ------------------------------------------------------------------ lesson 12


@pytest.mark.parametrize("level", [0, 1, 5, 9, 10])
def test_transhuge_doc_is_the_kernels(level):
    assert contract.transhuge_doc(level) == Machine.boot("4M", patches=level).kernel.TRANSHUGE_DOC


def test_doc_diff_patch_01_drops_only_the_foll_split_paragraph():
    diff = contract.doc_diff(0, 1)
    changed = [line for line in diff.splitlines() if line.startswith("== ") and "unchanged" not in line]
    assert changed == ["== get_user_pages and follow_page: changed"]
    assert "-In case code cannot take a compound page" in diff and "\n+" not in diff


def test_doc_diff_patch_10_changes_all_but_the_gup_section():
    diff = contract.doc_diff(1, 10)
    unchanged = [line for line in diff.splitlines() if line.endswith(": unchanged")]
    assert unchanged == ["== get_user_pages and follow_page: unchanged"]
    assert "== compound_lock, get_user_pages and put_page: section removed" in diff
    assert "== Refcounts and transparent huge pages: new section" in diff
    assert "split_huge_pmd(vma," in diff and "-When pmd_trans_huge() says yes" in diff
    assert contract.doc_diff(9, 10).split("\n", 1)[1] == diff.split("\n", 1)[1]


@pytest.mark.parametrize("level", [0, 1, 10])
def test_every_promise_is_one_tagged_line_with_links(level):
    from thplab.series.p10_documentation import links, promises

    for section, text in contract.transhuge_doc(level).items():
        for promise in promises(text):
            urls = links(promise)
            assert urls, (section, promise)
            for url in urls:
                assert url.startswith(("https://elixir.bootlin.com/linux/v", "https://lore.kernel.org/",
                                       "https://lwn.net/")), url
            # level 0/1 say only what v3.16 documents; level 10 adds the reconstructed patch 10
            if level < 10:
                assert promise.endswith("]") and "[v3.16 L" in promise, promise
    assert "https://lwn.net/Articles/601781/" in contract.doc_links()


def test_doc_sections_mark_levels_and_missing_sections():
    text = contract.doc_sections(show_all=True)
    assert text.splitlines()[1] == "L0  L1  L10"
    assert "(no such section at level 10)" in text and "(no such section at level 0, 1)" in text
    gup = [line for line in text.splitlines() if "hand back the head or" in line]
    assert gup and gup[0].startswith("x   x   x   ")


def test_doc_sections_show_only_what_differs_by_default():
    short, full = contract.doc_sections(), contract.doc_sections(show_all=True)
    marks = [line[:12] for line in short.splitlines() if re.match(r"[x.]   [x.]   [x.]   ", line)]
    assert marks and "x   x   x   " not in marks                     # no promise kept at every level
    assert "hand back the head or" not in short and "hand back the head or" in full
    # the get_user_pages section: its four unchanged promises counted, FOLL_SPLIT (gone at 1) listed
    gup = short.split("== get_user_pages and follow_page")[1].split("==")[0]
    assert "FOLL_SPLIT" in gup and "(4 more promises, made at every level)" in gup
    assert "(no such section at level 10)" in short and len(short.splitlines()) < len(full.splitlines())


def test_every_promise_is_kept_at_level_10():
    for promise, holds, evidence in contract.check_promises(10):
        assert holds, (promise.text, evidence)


def test_level_0_breaks_the_new_promises_it_can():
    verdicts = {p.text: holds for p, holds, _ in contract.check_promises(0)}
    texts = [p.text for p in contract.PROMISES]
    assert [verdicts[t] for t in texts] == [None, None, None, None, True, False, False, False,
                                            True, False, True, True]


def test_contract_table_lists_every_promise_at_both_levels():
    text = contract.contract_table()
    assert text.count("L10 kept") == len(contract.PROMISES)
    assert text.count("L0 ") == len(contract.PROMISES)


def test_random_state_is_reproducible_and_consistent():
    a, b = contract.random_state(10, 7), contract.random_state(10, 7)
    assert a.log == b.log
    assert a.machine.mem_map.tobytes() == b.machine.mem_map.tobytes()
    a.machine.check()
    assert contract.random_state(10, 8).log != a.log


def test_split_huge_pmd_never_fails_and_keeps_the_compound_page_from_level_4():
    new = contract.split_huge_pmd_trials(10, 25)
    assert not new["failures"] and new["pmds"] > 25
    assert new["compound_kept"] == new["pmds"]
    old = contract.split_huge_pmd_trials(0, 25)
    assert not old["failures"] and old["compound_kept"] == 0


def test_split_huge_page_fails_exactly_when_pinned_at_level_10_only():
    new = contract.split_huge_page_trials(10, 25)
    assert new["disagree"] == 0 and new["pinned"] > 0 and not new["problems"]
    assert new["ebusy_pinned"] == new["pinned"]
    old = contract.split_huge_page_trials(0, 25)
    assert old["ebusy_pinned"] == 0 and old["disagree"] == old["pinned"] > 0


def test_huge_pmds_finds_each_process_mapping():
    m = Machine.boot("16M", patches=10)
    pid = m.spawn()
    addr = m.mmap(pid, 4 << 20)
    m.touch(pid, addr, 4 << 20)
    child = m.fork(pid)
    m.split_huge_pmd(child, addr)
    assert contract.huge_pmds(m) == [(pid, addr), (pid, addr + (2 << 20)), (child, addr + (2 << 20))]


@pytest.mark.parametrize("seed", range(8))
def test_split_pmd_problem_counts_the_pmds_still_huge(seed):
    p = contract.SplitPmdProblem.generate(seed)
    forks = sum(s.startswith("fork") for s in p.steps)
    pre = sum(s.startswith("split_huge_pmd") for s in p.steps)
    assert p.answer == forks + 1 - pre
    assert p.check(p.answer)[0] and not p.check(p.answer + 1)[0]
    assert p.render() == contract.SplitPmdProblem.generate(seed).render()
    assert p.render().startswith(f"ARG seed {seed}\nARG level 10")


# ------------------------------------------------------------------ lesson 13


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_compare_scenario_is_deterministic_and_marks_differences(name):
    text = compare.compare_scenario(name)
    assert text == compare.compare_scenario(name)
    assert text.startswith(f"== {name}: ")
    for line in text.splitlines():
        assert len(line) <= 110


def test_compare_scenario_shows_the_pinned_split_outcomes():
    text = compare.compare_scenario("fork-pin-split")
    row = next(line for line in text.splitlines() if "4. split_huge_page()" in line)
    assert "-> 0; thp_split +1" in row and "-> -16; thp_split_page_failed +1" in row
    assert row.endswith("*")
    parent = next(line for line in compare.compare_scenario("fork-split-pmd").splitlines()
                  if line.strip().startswith("pid 1"))
    assert "512 PTEs" in parent and "one huge PMD" in parent


def test_identity_report_spells_out_both_identities():
    old = compare.identity_report(SCENARIOS["fork-pin-split"].start(0).run_to(3))
    new = compare.identity_report(SCENARIOS["fork-pin-split"].start(10).run_to(3))
    assert "3 = 2 + 1 + 0" in old and "tail pins = Σ (tail _mapcount + 1) = 1 (subpage 5)" in old
    assert "3 = 2 + 1" in new and "pins = what is left = 1" in new
    munmap = compare.identity_report(SCENARIOS["partial-munmap"].start(10).run_to(2))
    assert "508 = 508 + 0" in munmap
    assert "no compound page" in compare.identity_report(SCENARIOS["partial-munmap"].start(0).run_to(2))


def test_pinned_split_records_both_kernels():
    run0, ret0, rec0 = compare.pinned_split(0)
    run10, ret10, rec10 = compare.pinned_split(10)
    assert ret0 == 0 and ret10 == -EBUSY
    names0 = [s.name for s in rec0.steps]
    assert any("__split_huge_page_refcount" in n for n in names0)
    assert any("racy check" in s.name for s in rec10.steps)
    summary = compare.step_summary(rec10, run10.subpages())
    assert summary.count("CPU0:") == len(rec10.steps)
    assert "/proc/vmstat thp_split_page_failed: 0 -> 1" in summary
    assert "thp_split_page_failed 0 -> 1" in compare.step_summary(rec10, run10.subpages(), counts=True)


def test_step_summary_says_what_the_widget_says_within_100_columns():
    run, _, rec = compare.pinned_split(0)
    text = compare.step_summary(rec, run.subpages(), max_rows=3)
    assert max(map(len, text.splitlines())) <= 100
    flat = " ".join(text.split())
    for i in (1, 7, len(rec.steps) - 1):
        assert " ".join(widgets.describe_step(rec, i, run.subpages(), 3).split()) in flat
    assert "pfn 0x205: _count" in text  # the pin handed to subpage 5 at the old split


def test_identity_terms_and_title_read_each_scheme():
    old = SCENARIOS["fork-pin-split"].start(0).run_to(3)
    t = compare.identity_terms(old.machine, old.head)
    assert (t["scheme"], t["count"], t["pmd_maps"], t["tail_pins"], t["pinned_tails"], t["head_pins"]) == \
        ("old", 3, 2, 1, [5], 0)
    assert compare.identity_title(old.machine, old.head) == (
        "level 0: head _count 3 = 2 PMD maps + 1 tail pin(s) (in subpage 5's _mapcount) + 0 head pin(s)")
    new = SCENARIOS["fork-pin-split"].start(10).run_to(3)
    t = compare.identity_terms(new.machine, new.head)
    assert (t["scheme"], t["count"], t["mapcount_sum"], t["pins"]) == ("v1", 3, 2, 1)
    assert "Σ page_mapcount 2 + 1 pin(s)" in compare.identity_title(new.machine, new.head)
    old.step()  # the old split succeeds: no compound page left
    assert compare.identity_terms(old.machine, old.head) is None
    assert "not compound" in compare.identity_title(old.machine, old.head)


def test_pin_writes_two_counters_on_the_old_kernel_one_on_the_new():
    old, new = compare.pin_writes(0), compare.pin_writes(10)
    assert old["get"] == ["pfn 0x200 (subpage 0): _count 1 -> 2", "pfn 0x205 (subpage 5): _mapcount -1 -> 0"]
    assert old["put"] == ["pfn 0x200 (subpage 0): _count 2 -> 1", "pfn 0x205 (subpage 5): _mapcount 0 -> -1"]
    assert new["get"] == ["pfn 0x200 (subpage 0): _count 1 -> 2"] and len(new["put"]) == 1
    text = compare.pin_writes_text()
    assert text.count("2 counter(s) moved") == 2 and text.count("1 counter(s) moved") == 2
    assert max(map(len, text.splitlines())) <= 100


def test_thp_mappings_titled_with_the_identity_marks_the_pin():
    from thplab import diagrams

    run = SCENARIOS["fork-pin-split"].start(0).run_to(3)
    d = diagrams.thp_mappings(run.machine, run.head, title=compare.identity_title(run.machine, run.head))
    assert "2 PMD maps + 1 tail pin(s)" in d.svg and "subpage 5 tail: _count 0  _mapcount 0" in d.text
    assert d.svg.count('class="pin-marker"') == 1


def test_step_through_shows_what_the_recorder_has():
    run, _, rec = compare.pinned_split(0)
    view = widgets.StepThrough(rec, pages=run.subpages())
    for i in (0, 3, len(rec.steps) - 1):
        view.slider.value = i
        assert widgets.describe_step(rec, i, run.subpages()) in view.output.value.replace("&gt;", ">")
    view.slider.value = 0
    view.next_button.click()
    assert view.slider.value == 1


@pytest.mark.parametrize("seed", range(8))
def test_cost_problem_is_the_old_kernels_extra_atomics_measured(seed):
    p = compare.CostProblem.generate(seed)
    old, new = (compare.sequence_cost(lv, p.heads, p.tails)["atomic"] for lv in (0, 10))
    assert p.answer == old - new
    c0, c10 = costs.tail_get_put(0), costs.tail_get_put(10)
    per_tail = sum(c0[k]["atomic"] - c10[k]["atomic"] for k in ("get_page", "put_page"))
    assert p.answer == len(p.tails) * per_tail  # head calls cost the same on both kernels
    assert p.check(str(p.answer))[0] and not p.check(p.answer + 1)[0]
    assert "whole number" in p.check("many")[1]
    assert p.answer not in p.diagnoses
    wrong = (p.heads + len(p.tails)) * per_tail
    if wrong != p.answer:
        assert "head calls like tail calls" in p.check(wrong)[1]
    assert p.render().startswith(f"ARG seed {seed}") and p.render() == compare.CostProblem.generate(seed).render()


def test_sequence_cost_of_head_references_is_one_atomic_each():
    for level in (0, 10):
        assert compare.sequence_cost(level, 3, []) == {"atomic": 6}


def test_quiz_widget_with_lesson_factories():
    quiz = widgets.Quiz(seed=3, factory=compare.CostProblem.generate)
    quiz.answer.value = str(quiz.problem.answer)
    assert quiz.check()
    quiz.new_button.click()
    assert quiz.problem.seed == 4 and quiz.answer.value == ""
    quiz = widgets.Quiz(seed=2, factory=contract.SplitPmdProblem.generate)
    quiz.answer.value = "0"
    assert not quiz.check() and "Not quite" in quiz.feedback.value


# ------------------------------------------------------------------ lesson 14


def test_partial_munmap_workload_holds_memory_only_at_level_10():
    old, new = open_problems.partial_munmap_workload(0), open_problems.partial_munmap_workload(10)
    assert old["unmapped_kb"] == new["unmapped_kb"] and old["mapped_kb"] == new["mapped_kb"]
    assert old["held_kb"] == 0 and old["anon_kb"] == old["mapped_kb"] and old["thps"] == 0
    assert new["held_kb"] == new["unmapped_kb"] and new["anon_kb"] == 16 * 2048 and new["thps"] == 16
    assert "held" in open_problems.workload_text()


def test_held_memory_sweep_reaches_512_times():
    sweep = open_problems.held_memory_sweep(unmapped=(0, 256, 511), nr_thps=2)
    assert sweep["mapped_kb"] == [4096, 2048, 8]
    assert sweep["held_kb"] == {0: [0, 0, 0], 10: [0, 2048, 4088]}
    assert sweep["anon_kb"][10] == [4096] * 3 and sweep["anon_kb"][0] == sweep["mapped_kb"]
    assert open_problems.sweep_text(sweep).splitlines()[-2].endswith("512x")


def test_unaligned_vmas_span_compound_pages_at_level_10_only():
    new = open_problems.vma_text(*open_problems.unaligned_vmas(10)[:2])
    assert "3 VMA(s)" in new and new.count("(2 VMAs)") == 2
    assert "subpages 0-255" in new and "subpages 256-511" in new
    old = open_problems.vma_text(*open_problems.unaligned_vmas(0)[:2])
    assert old.endswith("several VMAs: none") and "ordinary 4 KiB pages" in old


def test_mapcount_ambiguity_identical_struct_pages_different_page_tables():
    states = open_problems.mapcount_ambiguity()
    (ma, *_, ha), (mb, *_, hb) = states["A"], states["B"]
    assert ma.mem_map[ha:ha + HPAGE_PMD_NR].tobytes() == mb.mem_map[hb:hb + HPAGE_PMD_NR].tobytes()
    assert mapping_counts(ma)["pmd_maps"][ha] == 1 and mapping_counts(mb)["pmd_maps"][hb] == 0
    text = open_problems.ambiguity_text(states)
    assert "equal: yes" in text


def test_cow_reuse_copies_although_head_mapcount_says_reuse():
    r = open_problems.cow_reuse()
    assert r["naive_reuse"] and r["tails_mapped"] == 511
    assert r["decision"] == "copy" and r["events"] == {"thp_fault_alloc": 1}
    assert r["child_pfn"] == r["head"] + 5 and r["parent_pfn"] != r["head"]
    assert "naive rule says reuse" in open_problems.cow_text(r)


def test_vma_diagram_draws_three_vmas_and_compound_pages_split_between_them():
    m, pid, addr = open_problems.unaligned_vmas(10)
    d = open_problems.vma_diagram(m, pid, addr, 4 << 20)
    assert d.svg.count('class="vma"') == 3 and d.svg.count('class="vma-boundary"') == 2
    assert d.svg.count('class="pte-table"') == 2 and 'class="pmd"' not in d.svg
    assert d.svg.count('data-vmas="2"') == 2 and "THP pfn 0x200: 2 VMAs" in d.svg
    assert d.text == open_problems.vma_text(m, pid)
    m0, pid0, addr0 = open_problems.unaligned_vmas(0)
    old = open_problems.vma_diagram(m0, pid0, addr0, 4 << 20)
    assert 'class="compound"' not in old.svg and "1024 ordinary 4 KiB pages" in old.svg
    m1 = Machine.boot("16M", patches=10)
    p1, a1, _ = m1.map_thp()
    assert "one huge PMD" in open_problems.vma_diagram(m1, p1, a1, 2 << 20).svg


def test_ambiguity_titles_say_what_the_head_mapcount_counts():
    titles = open_problems.ambiguity_titles(open_problems.mapcount_ambiguity())
    assert titles["A"].endswith("counts 1 PMD(s) + 0 PTE(s) of subpage 0")
    assert titles["B"].endswith("counts 0 PMD(s) + 1 PTE(s) of subpage 0")
    assert "head _mapcount 0 (page_mapcount 1)" in titles["A"] and "head _mapcount 0 (page_mapcount 1)" in titles["B"]


@pytest.mark.parametrize("seed", range(10))
def test_held_question_is_the_allocators_count_with_diagnosed_slips(seed):
    q = open_problems.HeldQuestion.generate(seed)
    nr = len(q.runs)
    unmapped = sum(k for _, k in q.runs)
    whole = sum(k == HPAGE_PMD_NR for _, k in q.runs)
    assert q.answer == ((nr - whole) * HPAGE_PMD_NR if q.level == 10 else nr * HPAGE_PMD_NR - unmapped)
    assert q.check(q.answer)[0] and q.answer not in q.diagnoses
    if q.level == 0 and whole == 0:
        assert "You counted the unmapped subpages" in q.check(nr * HPAGE_PMD_NR)[1]
    if q.level == 10:
        assert "You freed the unmapped subpages" in q.check(nr * HPAGE_PMD_NR - unmapped)[1]
    assert q.render() == open_problems.HeldQuestion.generate(seed).render()
    assert q.render().startswith(f"ARG seed {seed}\nARG level {q.level}")


def test_held_question_draws_both_levels_and_whole_unmaps():
    qs = [open_problems.HeldQuestion.generate(s) for s in range(30)]
    assert {q.level for q in qs} == {0, 10}
    assert any(k == HPAGE_PMD_NR for q in qs for _, k in q.runs)


# ------------------------------------------------------------------ lesson 16


def test_format_experiment_is_one_recorded_experiment():
    run = live.load_recorded()
    text = live_lab.format_experiment(run, "pin")
    assert "RECORDED" in text and "== pin:" in text and "== fork:" not in text


def test_verdict_table_counts_every_compared_row():
    run = live.load_recorded()
    text = live_lab.verdict_table(run)
    assert text.startswith(f"RECORDED: Linux {run.kernel}")
    assert text.splitlines()[1].split()[2::4] == ["L0", "L10", "v4.5"]
    for line in text.splitlines()[2:]:
        name, rows, *counts = line.split()
        counts = list(map(int, counts))
        assert len(counts) == 3 * len(live_lab.KERNELS)
        rows_ = live.compare(run.experiments[name], live_lab.KERNELS)
        assert {sum(counts[i:i + 3]) for i in range(0, len(counts), 3)} == {int(rows)} == {len(rows_)}
        assert counts[-2] == sum(r.verdict["v4.5"] == "differs" for r in rows_)


@pytest.mark.parametrize("seed", range(10))
def test_live_question_answers_with_the_observation(seed):
    q = live_lab.LiveQuestion.generate(seed)
    result = live.load_recorded().experiments[q.experiment]
    row = next(r for r in live.compare(result) if r.step == q.step and r.quantity == q.quantity)
    assert q.answer == row.observed
    assert q.check(q.answer)[0] and "RECORDED" in q.render()
    assert q.render() == live_lab.LiveQuestion.generate(seed).render()


def test_live_vs_model_draws_the_recorded_partial_munmap():
    run = live.load_recorded()
    d = live_lab.live_vs_model(run, "partial_munmap", "munmap")
    assert "RECORDED" in d.svg and f"Linux {run.kernel}" in d.svg and "LIVE" not in d.svg
    # The real kernel: the unmapped subpage is still a tail with kpagecount 0, the rest count 1.
    assert "256 tail · kpagecount 0" in d.svg and "1-255 tail · kpagecount 1" in d.svg
    assert "model, level 0 (v3.16)" in d.svg and "frames 0x200-0x3ff" in d.svg
    # Level 0 split the page: all four of its runs differ; level 10 and v4.5 match the kernel everywhere.
    assert d.svg.count('class="differs"') == 4 and "256 free · kpagecount 0" in d.svg
    assert "≠ real: head" in d.svg and d.text.count("≠ real: tail") == 3
    level10, v45 = d.text.split("model, level 10")[1].split("model, v4.5 (merged)")
    assert "≠" not in level10 and "256 tail · kpagecount 0; mapped by nobody" in level10
    assert "≠" not in v45 and "256 tail · kpagecount 0; mapped by nobody" in v45
    assert max(map(len, d.text.splitlines())) <= 100


def test_v45_keeps_the_partially_unmapped_thp_allocated_like_level_10():
    """v4.5's frames after the partial munmap: compound, nothing freed, the unmapped tail counts 0."""
    v45, rfc = (live_lab.model_frames("partial_munmap", "munmap", k) for k in ("v4.5", 10))
    assert v45.title == "model, v4.5 (merged)" and v45.how == {"self": "PTEs"}
    assert (v45.kind == rfc.kind).all() and v45.kind[0] == 1 and (v45.kind[1:] == 2).all()
    assert v45.kpagecount[256] == 0 and (np.delete(v45.kpagecount, 256) == 1).all()
    # The fault differs: v4.5 counts the PMD in every subpage, RFC v1 in the head only.
    fault = {k: live_lab.model_frames("fault", "fault", k).kpagecount for k in ("v4.5", 10)}
    assert (fault["v4.5"] == 1).all() and fault[10][0] == 1 and (fault[10][1:] == 0).all()


def test_live_vs_model_fork_shows_both_processes():
    d = live_lab.live_vs_model(live.load_recorded(), "fork", "child_write")
    real = d.text.split("model, level 0")[0]
    assert "self maps 512 of the THP's 512 subpages through a huge PMD" in real
    assert "child maps 511 of the THP's 512 subpages through PTEs" in real
    assert "256 tail · kpagecount 1; mapped by self" in real
    assert "≠ real: kpagecount 2, child maps it" in d.svg
    # v4.5 copies the whole THP for the child too (PMD split on COW came in v5.8).
    v45 = d.text.split("model, v4.5 (merged)")[1]
    assert "child maps 0 of the THP's 512 subpages" in v45 and "≠ real" in v45


def test_real_frames_are_filled_only_where_the_counts_leave_no_choice():
    assert live_lab._fill({0: 1, 5: 0}, {1: 511, 0: 1}).tolist() == [1] * 5 + [0] + [1] * 506
    unknown = live_lab._fill({0: 1, 5: 0}, {1: 500, 0: 12})
    assert unknown[[0, 5]].tolist() == [1, 0] and (np.delete(unknown, [0, 5]) == -1).all()
    frames = live_lab.real_frames(live.load_recorded(), "pin", "split_unpinned")
    assert (frames.kind == 0).all() and frames.sampled == (0, 1, 128, 255, 256, 257, 511)


def test_live_vs_model_without_root_marks_frames_not_recorded():
    import copy

    run = copy.deepcopy(live.load_recorded())
    run.experiments["fault"].steps[0]["views"]["self"]["physical"] = "/proc/kpageflags: permission denied"
    d = live_lab.live_vs_model(run, "fault", "fault")
    assert "0-511 not recorded; mapped by self" in d.text and "permission denied" in d.text
    assert 'class="differs"' not in d.svg      # nothing known to differ from


def test_differences_shows_only_rows_that_do_not_match():
    run = live.load_recorded()
    for name in live.EXPERIMENTS:
        short = live_lab.differences(run, name).splitlines()
        full = live_lab.differences(run, name, all_rows=True).splitlines()
        assert short[0].startswith(f"RECORDED {name} ") and max(map(len, full)) <= 100
        rows = [r for r in live.compare(run.experiments[name], live_lab.KERNELS)
                if r.step != "fault" or name == "fault"]
        differing = [r for r in rows if any(v != "match" for v in r.verdict.values())]
        assert len(full) - 2 == len(rows)
        assert len(short) - 2 == (len(differing) or 1)
    assert "every compared row matches every model kernel" in live_lab.differences(run, "full_munmap")
    assert "  mprotect       thp_split " in live_lab.differences(run, "mprotect")
    assert "v4.5 merged" in live_lab.differences(run, "mprotect").splitlines()[1]
    assert "matches both" in live_lab.differences(run, "full_munmap", levels=(0, 10))


def test_reasons_are_numbered_once_and_referenced():
    text = live_lab.reasons()
    numbers = [line.split("]")[0] + "]" for line in text.splitlines() if line.startswith("[")]
    assert numbers == [f"[{i}]" for i in range(1, len(numbers) + 1)]
    flat = text.replace("\n    ", " ")
    # With v4.5 compared, the later changes' texts stand in for the COW and counter texts.
    assert live.LATER_EXPLANATIONS["PMD split on COW"] in flat
    assert live.STEP_EXPLANATIONS[("fork", "child_write")] not in flat
    assert flat.endswith(live.UNEXPLAINED)
    texts = live_lab._reason_texts()
    cow = f"[{texts.index(live.LATER_EXPLANATIONS['PMD split on COW']) + 1}]"
    assert cow in live_lab.differences(live.load_recorded(), "fork")
    old = live_lab.reasons(levels=(0, 10)).replace("\n    ", " ")
    assert live.STEP_EXPLANATIONS[("fork", "child_write")] in old and live.UNEXPLAINED not in old


def test_after_v45_lists_what_is_left_and_the_later_change_of_each_row():
    import copy

    run = live.load_recorded()
    text = live_lab.after_v45(run)
    lines = text.splitlines()
    rows = [line.split() for line in lines[2:lines.index("")]]
    expected = [(name, r.step, r.quantity) for name, result in run.experiments.items()
                for r in live.compare(result, live_lab.KERNELS)
                if r.verdict["v4.5"] != "match" and (r.observed, r.predicted["v4.5"]) != (None, None)
                and (r.step != "fault" or name == "fault")]
    assert len(rows) == len(expected) == 10
    assert [(r[0], r[1]) for r in rows] == [(name, step) for name, step, _ in expected]
    assert {r[-1] for r in rows} == {"[1]", "[2]"}        # every row named, none unexplained
    assert "[1] thp_deferred_split_page, v4.6" in text and "[2] PMD split on COW, v5.8" in text
    assert "https://git.kernel.org/torvalds/c/3917c80280c9" in text
    assert "Not needed by any row of this run: FOLL_PIN / pin_user_pages(); folios;" in text
    assert max(map(len, lines)) <= 100
    other = copy.deepcopy(run)
    other.experiments["mprotect"].step("mprotect")["vmstat_delta"]["nr_anon_transparent_hugepages"] = 0
    assert any(line.startswith("  mprotect") and line.endswith("unexplained")
               for line in live_lab.after_v45(other).splitlines())


def test_live_vs_recorded_lists_only_what_moved():
    import copy

    run = live.load_recorded()
    assert "none:" in live_lab.live_vs_recorded(run, run)
    other = copy.deepcopy(run)
    other.experiments["fork"].steps[2]["vmstat_delta"]["thp_fault_alloc"] = 1
    text = live_lab.live_vs_recorded(other, run)
    assert len(text.splitlines()) == 2 and "fork" in text and "thp_fault_alloc" in text


def test_live_question_diagnoses_the_v45_prediction_too():
    q = live_lab.LiveQuestion.for_row("fork", "child_write", "kpagecount[1]")
    assert q.answer == 2 and "v4.5 (merged) predicts 1 (differs)" in q.explanation
    ok, message = q.check(1)
    assert not ok and "what the model predicts at v4.5 (merged)" in message
    assert "what the model predicts at level 0 (v3.16)" in q.check(0)[1]
    assert "PMD split on COW (v5.8" in q.explanation


def test_live_question_for_a_row_diagnoses_the_model_levels():
    q = live_lab.LiveQuestion.for_row("fork", "fork", "kpagecount[1]")
    assert q.answer == 2 and "fork()" in q.render()
    ok, message = q.check(0)
    assert not ok and "what the model predicts at level 0" in message
    assert "No answer yet" in q.check(None)[1]
    q = live_lab.LiveQuestion.for_row("pin", "split_pinned", "thp_split_page_failed", diagnoses={0: "refused"})
    assert q.answer == 1 and "refused" in q.check(0)[1]


def test_lesson_15s_questions_bring_their_own_diagnoses():
    """The lesson's cells ask without listing wrong answers; live_lab knows what each means."""
    q = live_lab.LiveQuestion.for_row("fork", "fork", "kpagecount[1]")
    assert "child's PMD maps subpage 1 too" in q.check(1)[1]
    q = live_lab.LiveQuestion.for_row("pin", "split_pinned", "thp_split_page_failed")
    assert "refused and counted" in q.check(0)[1]
    source = (Path(__file__).parent.parent / "notebooks" / "16-live-kernel-lab.ipynb").read_text()
    assert "diagnoses=" not in source


@pytest.mark.parametrize("seed", range(8))
def test_level_question_is_answered_by_the_model_at_that_level(seed):
    q = live_lab.LevelQuestion.generate(seed)
    assert 1 <= q.level <= 9
    assert q.answer == int(live.predict(q.experiment, q.level)[q.step][q.quantity])
    assert q.check(q.answer)[0] and q.answer not in q.diagnoses
    ends = [live.predict(q.experiment, lv)[q.step].get(q.quantity) for lv in (0, 10)]
    assert ends[0] != ends[1]                # levels 0 and 10 disagree on this row
    assert q.render() == live_lab.LevelQuestion.generate(seed).render()
    assert q.render().startswith(f"ARG seed {seed}")


def test_live_report_explains_when_the_kernel_does_not_allow(monkeypatch):
    monkeypatch.setattr(live, "thp_unavailable_reason", lambda: "THP disabled: enabled is [never]")
    monkeypatch.setattr(live, "run_all", lambda *a, **k: pytest.fail("must not run"))
    run, text = live_lab.live_report()
    assert run is None and "THP disabled" in text and "recorded run" in text


# ------------------------------------------------------------------ small helpers


def test_costs_by_label_feeds_plot_costs():
    bars = compare.costs_by_label((0, 10))
    assert list(bars) == ["get_page(tail), level 0", "put_page(tail), level 0",
                          "get_page(tail), level 10", "put_page(tail), level 10"]
    assert bars["put_page(tail), level 0"] == costs.tail_get_put(0)["put_page"]


def test_held_series_labels_levels():
    sweep = {"held_kb": {0: [0, 0], 10: [0, 8]}}
    assert open_problems.held_series(sweep) == {"level 0 (old kernel)": [0, 0], "level 10 (RFC v1)": [0, 8]}


@pytest.mark.parametrize("seed", range(8))
def test_pmd_count_problem_reads_the_page_tables(seed):
    p = open_problems.PmdCountProblem.generate(seed)
    pids = 1 + sum(s.startswith("fork") for s in p.steps)
    split = sum(s.startswith("split_huge_pmd") for s in p.steps)
    unmapped = sum(s.startswith("munmap") for s in p.steps)
    assert p.answer == pids - split
    assert p.mapcount == p.answer + split - unmapped
    assert p.check(p.answer)[0] and p.render() == open_problems.PmdCountProblem.generate(seed).render()
    assert p.answer not in p.diagnoses
    if p.mapcount != p.answer:
        assert "That is page_mapcount(head) itself" in p.check(p.mapcount)[1]


def test_cow_pte_reuse_shares_the_page_from_level_4():
    text = open_problems.cow_pte_reuse(levels=(0, 4, 10))
    lines = text.splitlines()
    assert "level  0: page_mapcount(subpage 7) = 2 -> copy" in lines[1]
    assert "level  4: page_mapcount(subpage 7) = 1 -> reuse" in text
    assert text.count("the parent sees the child's write") == 2


def test_live_question_says_who_answered():
    q = live_lab.LiveQuestion.generate(4)
    assert f"the recorded kernel reported {q.answer}" in q.check(q.answer + 1)[1]


def test_live_status_is_text_and_never_raises(monkeypatch):
    monkeypatch.setattr(live, "thp_unavailable_reason", lambda: "not Linux (sys.platform is 'x')")
    text = live_lab.live_status()
    assert text.startswith("kernel: Linux ") and "cannot run here (not Linux" in text


def test_lesson_12_lists_the_promises_the_model_checks():
    import json
    import pathlib

    nb = json.loads(pathlib.Path(__file__).parents[1].joinpath(
        "notebooks", "12-patch-10-documentation.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "The model can check twelve of them" in text and len(contract.PROMISES) == 12
    assert "(12) `split_huge_pmd()` never fails" in text
    table = contract.contract_table(levels=(10, 0))
    assert max(map(len, table.splitlines())) <= 100


def test_lesson_12_hands_on_identity_and_split():
    from thplab import diagrams
    from thplab.params import PAGE_SIZE

    m = Machine.boot("16M", patches=10, seed=0)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    m.split_huge_pmd(child, addr)
    pin = m.get_user_pages_fast(pid, addr + 5 * PAGE_SIZE)
    sub = range(head, head + HPAGE_PMD_NR)
    total = int(m.page_mapcount(list(sub)).sum())
    assert int(m.page_count(head)) == total + int(m.pins[head:head + HPAGE_PMD_NR].sum()) == 514
    d = diagrams.thp_mappings(m, head)
    assert "_count 514" in d.text and "pins 1" in d.text and "512 PTEs" in d.text
    assert m.split_huge_page(head) == -EBUSY
    m.put_page(pin)
    assert m.split_huge_page(head) == 0 and m.vmstat["thp_split_pmd"] == 2


# ------------------------------------------------------------------ thplab.later


def test_later_entries_have_every_field_and_pinned_links():
    from thplab import later

    assert len(later.LATER) >= 10
    for e in later.LATER:
        assert all(str(getattr(e, f)).strip() for f in ("name", "version", "commit", "link", "summary", "evidence"))
        assert 2016 <= e.year <= 2026
        assert e.link.startswith(("https://git.kernel.org/torvalds/c/", "https://lore.kernel.org/linux-mm/",
                                  "https://elixir.bootlin.com/linux/v")), e.link
        if e.link.startswith("https://git.kernel.org/"):
            assert e.link.endswith(e.commit) and len(e.commit) == 12
        if e.link.startswith("https://elixir"):
            assert "/source/" in e.link  # a file at a tagged version, not a moving branch
        assert e.verified == (not e.version.startswith("about")), e.name
        assert e.summary.endswith(".")


def test_later_versions_are_sorted_and_described_within_100_columns():
    from thplab import later

    keys = [later.version_key(e.version) for e in later.LATER]
    assert keys == sorted(keys) and keys[0] > (4, 5)
    assert [e.year for e in later.LATER] == sorted(e.year for e in later.LATER)
    text = later.describe_later()
    assert max(map(len, text.splitlines())) <= 100
    for e in later.LATER:
        assert f"{e.version:<11} {e.name}" in text and e.link in text
    assert " ".join(text.split()).count("(version not pinned down)") == sum(not e.verified for e in later.LATER)
    names = {e.name for e in later.LATER}
    assert {"folios", "FOLL_PIN / pin_user_pages()", "PageAnonExclusive", "multi-size THP (mTHP)",
            "_large_mapcount", "CONFIG_NO_PAGE_MAPCOUNT", "PageDoubleMap removed"} <= names


def test_lesson_14_lists_later_changes_only_through_thplab_later():
    import json
    import pathlib

    nb = json.loads(pathlib.Path(__file__).parents[1].joinpath("notebooks", "14-open-problems.ipynb").read_text())
    sources = ["".join(c["source"]) for c in nb["cells"]]
    assert any("later.describe_later()" in s for s in sources)
    markdown = "\n".join(s for c, s in zip(nb["cells"], sources) if c["cell_type"] == "markdown")
    assert "_large_mapcount" not in markdown and "CONFIG_NO_PAGE_MAPCOUNT" not in markdown
