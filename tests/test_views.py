"""Widgets and figures, driven from Python the way a learner drives them in the browser."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from thplab import Machine, viz, widgets  # noqa: E402
from thplab.problems import Problem  # noqa: E402
from thplab.scenarios import SCENARIOS  # noqa: E402
from thplab.trace import record  # noqa: E402


@pytest.fixture
def thp():
    m = Machine.boot("16M", patches=0)
    pid = m.spawn()
    addr = m.mmap(pid, 4 << 20)
    m.touch(pid, addr, 2 << 20)
    return m, pid, addr


def test_address_slicer_follows_the_typed_address(thp):
    m, pid, addr = thp
    s = widgets.AddressSlicer(m, pid, addr + 0x5ABC)
    assert "PGD    index 254" in s.output.value and "subpage 5" in s.output.value
    # the bits the header promises are shown, field by field
    assert "011111110" in s.output.value and "000000101" in s.output.value
    s.address.value = hex(addr + (2 << 20) + 0x3000)  # not yet faulted: PMD entry empty
    assert "PMD    index   1" in s.output.value and "none" in s.output.value
    s.address.value = "not an address"
    assert "&#9888;" in s.output.value and "int()" not in s.output.value
    s.address.value = str(1 << 47)   # decimal input, answered in hex against a hex range
    assert "0x800000000000 is not a user-space address" in s.output.value
    assert "0x0-0x7fffffffefff" in s.output.value


@pytest.mark.parametrize("typed,want", [("0x7f0000205abc", 0x7F0000205ABC), ("4096", 4096), ("0X1_000", 4096),
                                        (" 12 ", 12)])
def test_parse_address_reads_hex_and_decimal(typed, want):
    assert widgets.parse_address(typed) == (want, None)


@pytest.mark.parametrize("typed,words", [("0x7g", "is not an address"), ("-5", "-0x5 is not a user-space"),
                                         ("", "is not an address")])
def test_parse_address_explains_bad_input(typed, words):
    address, why = widgets.parse_address(typed)
    assert address is None and words in why


def test_step_through_takes_a_describer(thp):
    m, pid, addr = thp
    head = int(m.thp_heads()[0])
    _, rec = record(m, m.split_huge_page, head)
    st = widgets.StepThrough(rec, describe=lambda r, i, pages: f"position {i} of {len(r.steps)}")
    st.next_button.click()
    assert "position 1 of" in st.output.value


def test_scenario_explorer_steps_both_kernels_and_switches(thp):
    e = widgets.ScenarioExplorer("fork-pin-split", levels=(5, 6), figure=False)
    assert [o[0] for o in e.kernel.options] == ["before patch 06 (level 5)", "after patch 06 (level 6)"]
    e.run_button.click()
    assert e.step_button.disabled
    after = e.table.value
    assert "level 6" in after and "split_huge_page() again -&gt; 0" in e.status.value
    e.kernel.value = 5
    assert "level 5" in e.table.value and "split_huge_page() again -&gt; -16" in e.status.value
    e.reset_button.click()
    assert "no THP yet" in e.table.value and not e.step_button.disabled
    e.step_button.click()
    assert e.run.done == 1


def test_scenario_explorer_draws_its_figure(thp):
    e = widgets.ScenarioExplorer("fault", levels=(0, 10), figure=True)
    assert e.caption.value == ""
    e.step_button.click()
    assert e.caption.value.startswith("<i>page_mapcount() of each subpage for the THP at pfn 0x200")


def test_step_through_moves_and_describes_changes(thp):
    m, pid, addr = thp
    head = int(m.thp_heads()[0])
    _, rec = record(m, m.split_huge_page, head)
    st = widgets.StepThrough(rec)
    assert "the state before the operation" in st.output.value
    st.slider.value = st.slider.max
    assert st.output.value.count("pfn") >= 1
    st.next_button.click()
    assert st.slider.value == st.slider.max
    st.prev_button.click()
    assert st.slider.value == st.slider.max - 1


def test_race_view_steps_cpus_and_plays():
    rv = widgets.RaceView("split-vs-gup-fast", levels=(0, 10))
    rv.cpu_buttons["CPU1"].click()
    assert "CPU1: get_user_pages_fast: local_irq_disable" in rv.log.value
    rv.play_button.click()
    assert "TLB-flush IPI waits for CPU1" in rv.log.value and "CPU0 -&gt; 0" in rv.log.value
    rv.kernel.value = 10
    rv.play_button.click()
    assert "CPU0 -&gt; -16" in rv.log.value
    assert rv.cpu_buttons["CPU0"].disabled and rv.cpu_buttons["CPU1"].disabled


def test_race_view_what_if_breaks_the_invariants_the_protection_kept():
    rv = widgets.RaceView("put-page-vs-split", levels=(0, 10))
    rv.play_button.click()
    assert "invariants: all hold" in rv.log.value
    rv.protections.value = ("compound_lock",)
    rv.play_button.click()
    assert "WITHOUT compound_lock" in rv.title.value + rv.log.value or "BROKEN" in rv.log.value
    assert "invariants: BROKEN" in rv.log.value


def test_quiz_checks_answers_and_draws_new_problems():
    q = widgets.Quiz(seed=5, kind="page_count", levels=(0, 10))
    q.answer.value = str(q.problem.answer)
    assert q.check() and "&#10004;" in q.feedback.value
    q.answer.value = str(q.problem.answer + 3)
    assert not q.check() and "Not quite" in q.feedback.value
    first = q.problem_html.value
    q.new_button.click()
    assert q.seed == 6 and q.problem_html.value != first and q.feedback.value == ""


def test_quiz_accepts_a_custom_factory():
    q = widgets.Quiz(seed=2, factory=lambda s: Problem.generate(s, kind="held_pages", levels=(10,)))
    assert "still allocated" in q.problem_html.value


def test_patch_diff_lists_and_diffs_functions():
    d = widgets.PatchDiff(4)
    assert "get_page" in d.function.options and "__split_huge_page" in d.function.options
    d.function.value = "get_page"
    # the code change (tail pins no longer counted in tail _mapcount), not the decorator swap
    assert "-        np.add.at(mm[&quot;_mapcount&quot;], tails, 1)" in d.output.value
    assert "replaces" not in d.output.value
    d.function.value = "__split_huge_page"
    assert "removed by this patch" in d.output.value


def test_model_only_helpers_are_never_listed_as_kernel_functions():
    from thplab.series import BASE, PATCHES

    registered = {name for p in [BASE] + PATCHES for name in p.functions}
    assert widgets.MODEL_ONLY <= registered  # the filter names functions the series really has
    for n in range(1, len(PATCHES) + 1):
        replaced, removed = widgets.kernel_functions(n)
        shown = set(widgets.PatchDiff(n).function.options)
        assert shown == set(replaced) | set(removed)
        assert not shown & widgets.MODEL_ONLY, n
        text = widgets.patch_text(n)
        for name in widgets.MODEL_ONLY:
            assert f"{name}()" not in text and f"--- {name} before" not in text, (n, name)
    # patches 03 and 04 do register them; the card still lists their kernel functions
    assert "split_pmd" in PATCHES[2].functions and "check_refcounts" in PATCHES[3].functions
    assert widgets.kernel_functions(3) == (["split_huge_pmd"], ["split_huge_page_pmd", "split_huge_page_pmd_mm"])


def test_code_diff_leaves_out_decorators_and_docstrings():
    import inspect

    from thplab.series import PATCHES

    for n, patch in enumerate(PATCHES, 1):
        for name in widgets.kernel_functions(n)[0]:
            diff = widgets.code_diff(n, name)
            body = [line[1:] for line in diff.splitlines()[2:] if not line.startswith("@@")]
            assert not any(line.lstrip().startswith("@") for line in body), (n, name)
            doc = inspect.getdoc(patch.functions[name])
            if doc:
                assert doc.splitlines()[0] not in diff, (n, name)
    diff = widgets.code_diff(2, "PageAnon")   # the whole change of patch 02: look at the head
    assert diff.splitlines()[:2] == ["--- PageAnon before 02", "+++ PageAnon after 02"]
    assert '+    return (mem_map["mapping"][compound_head(mem_map, np.asarray(page))] & 1) != 0' in diff
    assert widgets.code_diff(3, "split_huge_pmd").count("\n+") >= 5  # new in patch 03: all added


def test_patch_diff_offers_its_text_twin_to_readers_without_widgets():
    d = widgets.PatchDiff(4)
    bundle = d._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == d.text() == widgets.patch_text(4)
    text = d.text()
    assert text.startswith("[PATCH, RFC 04/10] thp: PMD splitting without splitting compound page")
    replaced, removed = widgets.kernel_functions(4)
    for name in replaced:
        assert f"--- {name} before 04\n+++ {name} after 04" in text
    for name in removed:
        assert f"{name}() is removed by this patch." in text
    assert widgets.code_diff(4, "get_page") in text
    # words (the card, the function lists, why a function went) fit 100 columns; only the
    # model's code in the diffs and unbreakable links may be longer
    paragraphs = text.split("\n\n")
    prose = [line for par in paragraphs if not par.startswith("--- ") for line in par.splitlines()
             if "https://" not in line]
    assert len(prose) > 20 and max(map(len, prose)) <= 100
    assert widgets.patch_text(4, diff=False) == paragraphs[0]


def test_patch_cards_say_when_a_patch_is_reconstructed():
    assert "not in the public archive" in widgets.patch_card(4)
    assert "not in the public archive" not in widgets.patch_card(6)
    assert widgets.patch_card(0).startswith("the kernel before the series")


@pytest.mark.parametrize("field", list(viz.FIELDS))
def test_describe_thp_every_field(thp, field):
    m, pid, addr = thp
    head = int(m.thp_heads()[0])
    assert viz.describe_thp(m, head, field).startswith(viz.FIELDS[field])


def test_describe_thp_counts_held_subpages_and_refuses_unknown_fields(thp):
    run = SCENARIOS["partial-munmap"].start(10)
    run.run_all()
    assert "Held (allocated, unmapped, unpinned): 4 subpages" in viz.describe_thp(run.machine, run.head)
    m, pid, addr = thp
    with pytest.raises(ValueError, match="field must be one of"):
        viz.thp_values(m, int(m.thp_heads()[0]), "nope")
    assert np.asarray(viz.thp_values(m, int(m.thp_heads()[0]), "_count"))[0] == 1


# --------------------------------------------------------------------------- live swimlanes
def _points(diagram):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(diagram.svg)
    return [(e.attrib["data-step"], e.attrib["data-cpu"]) for e in root.iter() if e.attrib.get("class") == "point"]


def test_race_view_draws_the_swimlane_live_in_one_persistent_view():
    from thplab import diagrams

    rv = widgets.RaceView("split-vs-gup-fast", levels=(0, 10))
    view = rv.view
    assert _points(rv.diagram) == [("0", "CPU0"), ("0", "CPU1")]  # "start" in both lanes
    sent = []
    view.observe(lambda change: sent.append(change["new"]), names="value")
    rv.cpu_buttons["CPU1"].click()
    rv.cpu_buttons["CPU1"].click()
    assert len(sent) == 2 and rv.view is view                     # one message per click, same widget
    assert _points(rv.diagram)[2:] == [("1", "CPU1"), ("2", "CPU1")]
    assert rv.lane.value == rv.diagram.html and rv.lane.value in view.value and rv.log.value in view.value
    assert rv.diagram.text == diagrams.describe_race_swimlane(rv.race)   # the SVG's own text twin
    assert "CPU1: gup_pmd_range: PMD read" in rv.log.value           # and the log stays beside it
    rv.play_button.click()
    steps = rv.race.interleaving.steps
    assert len(_points(rv.diagram)) == len(steps) + 1 and 'data-arrow="ipi-sent"' in rv.diagram.svg
    assert rv.diagram.svg == diagrams.race_swimlane(rv.race).svg
    rv.protections.value = ("tlb_flush_ipi",)
    rv.play_button.click()
    assert "what-if without tlb_flush_ipi" in rv.diagram.title and "✘ the accounting breaks here" in view.value
    assert widgets.RaceView("split-vs-gup-fast", figure=False).lane.value == ""


def test_step_through_of_an_interleaving_draws_its_swimlane_once_and_restyles_it():
    from thplab import diagrams
    from thplab.races import RACES

    race = RACES["split-vs-gup-fast"](6)
    race.play()
    st = widgets.StepThrough(race.interleaving, pages=[race.head, race.head + 5], title="gup-fast vs split")
    lane = st.lane.value
    assert st.diagram.title == "gup-fast vs split" and st.lane in st.widget.children
    # the same points and locks as the race's own swimlane (head from pages[0])
    assert _points(st.diagram) == _points(diagrams.race_swimlane(race))
    assert st.diagram.svg.count('class="lock"') == diagrams.race_swimlane(race).svg.count('class="lock"') > 0
    assert st.prev_button.disabled and not st.next_button.disabled
    sent = []
    st.output.observe(lambda change: sent.append(change["new"]), names="value")
    st.next_button.click()
    st.slider.value = st.slider.max
    assert st.lane.value == lane                                   # the SVG was not sent again
    n = len(race.interleaving.steps)
    assert [v.split("<pre")[0] for v in sent] == [widgets.lane_style(st._scope, 1, n),
                                                  widgets.lane_style(st._scope, n - 1, n)]
    assert sent[-1].endswith(widgets._pre(widgets.describe_step(race.interleaving, n - 1, st.pages)))
    assert st.next_button.disabled and f"class='{st._scope}'" in lane
    css = widgets.lane_style("v1", 3, 6)
    assert ".v1 svg .point[data-step='3']{" in css and "stroke-width:4px" in css  # outlined thicker, not colour alone
    assert ".v1 svg [data-step='4'],.v1 svg [data-step='5']{opacity:0.3}" in css and "'3']{opacity" not in css
    assert "opacity" not in widgets.lane_style("v1", 5, 6)


def test_step_through_of_a_recorder_has_no_swimlane(thp):
    m, pid, addr = thp
    _, rec = record(m, m.split_huge_page, int(m.thp_heads()[0]))
    st = widgets.StepThrough(rec)
    assert st.lane is None and len(st.widget.children) == 3 and st.output.value.startswith("<pre")


def test_scenario_explorer_in_an_event_loop_steps_the_hidden_kernel_after_the_click():
    import asyncio

    from thplab import diagrams

    async def clicks():
        e = widgets.ScenarioExplorer("fork-pin-split", levels=(0, 10), figure=True)
        e.step_button.click()
        assert e.runs[10].done == 1 and e.runs[0].done == 0       # the view first
        await asyncio.sleep(0)
        assert e.runs[0].done == 1                                 # then, once the handler returned
        e.step_button.click()                                      # fork
        e.kernel.value = 0                                         # toggled before the loop ran: catch up first
        assert e.runs[0].done == 2 and "▲" in e.plot.value
        assert e.diagram.svg == diagrams.thp_mappings(e.run.machine, e.run.head, previous=e.previous[0]).svg
        e.step_button.click()
        e.reset_button.click()                                     # a reset drops what was deferred
        await asyncio.sleep(0)
        assert e.runs[10].done == 0 and e.runs[0].done == 0
        e.run_button.click()
        assert e.runs[10].finished and e.runs[0].finished

    asyncio.run(clicks())
