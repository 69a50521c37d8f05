"""thplab.lessons.merged: the helpers of lesson 15 (the design as merged for v4.5)."""

import numpy as np

from thplab import Machine, diagrams
from thplab.lessons import merged
from thplab.params import PAGE_SIZE
from thplab.trace import record


def _forked_then_split_in_child():
    m = Machine.boot("16M", kernel="v4.5", seed=0)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    m.mprotect(child, addr, PAGE_SIZE, "r")
    return m, pid, child, addr, head


def test_steps_table_lists_the_seven_steps_and_the_broken_window():
    rows = str(merged.steps_table()).splitlines()
    steps = [r for r in rows if r[:1].isdigit()]
    assert len(steps) == 7
    assert [r.split()[2] for r in steps] == ["on", "off", "off", "off", "off", "off", "on"]
    assert steps[3].split()[1] == "26-28" and "compound_mapcount" in steps[3]


def test_fields_diagram_shows_where_each_count_lives():
    m, pid, child, addr, head = _forked_then_split_in_child()
    d = merged.thp_fields_diagram(m, head)
    for label in ("_count 513", "compound_mapcount 0", "◆ PG_double_map SET", "deferred list: empty",
                  "_mapcount 1 each", "DoubleMap's extra", "total_mapcount"):
        assert label in d.svg, label
    assert d.svg.count('class="struct-page"') == 4
    assert "total_mapcount = 1 + Σ(_mapcount + 1) 1024 - 512 (DoubleMap) = 513" in d.text
    assert "page_count 513 = total_mapcount + 0 pin(s)" in d.text
    # after the parent's PMD goes and the child unmaps subpage 3: not DoubleMap, queued
    m.munmap(pid, addr, 2 << 20)
    m.munmap(child, addr + 3 * PAGE_SIZE, PAGE_SIZE)
    d = merged.thp_fields_diagram(m, head)
    assert "PG_double_map clear" in d.svg and "◆ deferred list: QUEUED" in d.svg
    assert "compound_mapcount -1" in d.svg and "_count 511" in d.svg


def test_the_two_states_of_lesson_14_differ_in_page1():
    ma = Machine.boot("16M", kernel="v4.5", seed=0)
    pa, addr_a, head_a = ma.map_thp()
    ca = ma.fork(pa)
    ma.split_huge_pmd(ca, addr_a)
    ma.munmap(ca, addr_a, PAGE_SIZE)
    mb = Machine.boot("16M", kernel="v4.5", seed=0)
    pb, addr_b, head_b = mb.map_thp()
    mb.split_huge_pmd(pb, addr_b)
    rows = {r[:36].strip(): r for r in str(merged.compare_thps((ma, head_a), (mb, head_b))).splitlines()[1:]}
    assert rows["compound_mapcount (raw, page[1])"].split()[-3:] == ["0", "-1", "differs"]
    assert rows["PageDoubleMap"].split()[-3:] == ["1", "0", "differs"]
    assert "differs" not in rows["head _mapcount (raw)"] and "differs" not in rows["head _count"]


def test_deferred_split_demo_holds_until_the_shrinker_runs():
    demo = merged.deferred_split_demo(nr_thps=4, unmapped=100)
    assert demo["v3.16 (old)"] == 0
    assert demo["rfc-v1"] == demo["v4.5"] == 4 * 100 * 4
    assert demo["v4.5 after drop_caches"] == 0 and demo["queued"] == 4 and demo["split"] == 4
    chart = merged.deferred_split_chart(demo)
    assert "1600 KiB" in chart.svg and "v4.5 after drop_caches" in chart.svg
    assert "<title>Memory held after partial munmap(), by kernel</title>" in chart.svg


def test_v45_questions_vary_reveal_nothing_and_diagnose_slips():
    kinds, answers = set(), set()
    for seed in range(40):
        q = merged.V45Question.generate(seed)
        kinds.add(q.kind)
        answers.add(q.answer)
        ok, text = q.check(None)
        assert not ok and "No answer yet" in text and q.explanation not in text
        assert q.check(q.answer)[0] and q.answer not in q.diagnoses
        for wrong, hint in q.diagnoses.items():
            assert not q.check(wrong)[0] and hint in q.check(wrong)[1]
        assert q.render().startswith(f"ARG seed {seed}\nARG kernel v4.5")
    assert kinds == set(merged.V45Question.KINDS) and len(answers) >= 6


def test_split_counters_read_total_mapcount_on_v45():
    m = Machine.boot("8M", kernel="v4.5", seed=0)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    m.split_huge_pmd(child, addr)
    ret, rec = record(m, m.split_huge_page, head)
    assert ret == 0
    text = diagrams.describe_split_counters(rec, head)
    assert "page_count - 1 == total_mapcount" in text.splitlines()[0]
    racy = next(line for line in text.splitlines() if "racy check" in line)
    frozen = next(line for line in text.splitlines() if "split_huge_page: frozen" in line)
    assert "head _count 514, total_mapcount 513" in racy and "[the kernel tests here]" in racy
    assert "head _count 1, total_mapcount 0 -- PASS" in frozen and "[the kernel tests here]" in frozen


def test_kernel_links_are_pinned_to_4_5_7():
    links = str(merged.kernel_links()).splitlines()
    assert len(links) == len(merged.KERNEL_LINKS)
    assert all("https://elixir.bootlin.com/linux/v4.5.7/source/" in line for line in links)
    assert np.all([line.split()[-1].rsplit("#L", 1)[1].isdigit() for line in links])


def test_review_history_links_every_step_it_names_to_lore():
    text = str(merged.review_history())
    assert text.count("https://lore.kernel.org/linux-mm/") == len(merged.REVIEW)
    assert {step for step, *_ in merged.REVIEW} <= {s.number for s in __import__("thplab").series.STACKS["v4.5"]}
    assert "Andrea Arcangeli" in text and "20160121012237.GE7119@redhat.com" in text
    assert max(map(len, text.splitlines())) <= 100


def test_open_problems_measured_on_both_kernels():
    rows = str(merged.open_problems_measured()).splitlines()
    held, after, cow, same = rows[1], rows[2], rows[3], rows[4]
    assert held.split()[-2:] == ["8176", "8176"] and after.split()[-2:] == ["8176", "0"]
    assert cow.split()[-2:] == ["yes", "no"] and same.split()[-2:] == ["yes", "no"]


def test_tail_get_put_costs_ten_six_two():
    from thplab import costs

    total = {lv: sum(c.get("atomic", 0) for c in costs.tail_get_put(lv).values()) for lv in (0, 10, "v4.5")}
    assert total == {0: 10, 10: 6, "v4.5": 2}
    assert "v4.5" in costs.cost_table(levels=(0, "v4.5"))
