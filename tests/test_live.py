"""Tests of thplab.live: the package's import order, parsers on sample files,
decoders on synthetic bytes, the unavailability paths, the experiment child's
lifetime (it dies with its parent; Ctrl-C ends the CLI cleanly), and (marked
``live``) the experiments on the kernel this runs on.

The samples in tests/data/live were taken on Linux 6.18 (x86-64, THP
``[madvise]``): ``proc/self/smaps`` after mprotect(PROT_READ) of 64 KiB in a
THP at 0x200000000000, ``proc/4242/smaps`` right after the THP fault.
"""

import ast
import copy
import dataclasses
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from thplab import live
from thplab.errors import BadArgument
from thplab.later import LATER

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "live"
LIVE_PACKAGE = ROOT / "thplab" / "live"
LIVE_MODULES = sorted(path.stem for path in LIVE_PACKAGE.glob("*.py") if path.stem != "__init__")
THP_START = 0x200000000000
THP_SIZE = 2 << 20


@pytest.fixture
def sample_paths(monkeypatch):
    """Point the probes at the sample /proc and /sys trees."""
    monkeypatch.setattr(live.probes, "PROC", str(DATA / "proc"))
    monkeypatch.setattr(live.probes, "SYS_THP", str(DATA / "sys-thp"))


@pytest.fixture
def sys_thp(tmp_path, monkeypatch):
    """A writable copy of the sample THP sysfs tree, used by the probes."""
    root = tmp_path / "sys-thp"
    shutil.copytree(DATA / "sys-thp", root)
    monkeypatch.setattr(live.probes, "SYS_THP", str(root))
    monkeypatch.setattr(live.probes, "PROC", str(DATA / "proc"))
    return root


@pytest.fixture
def fake_proc(tmp_path, monkeypatch):
    """An empty /proc stand-in that tests fill with synthetic files."""
    (tmp_path / "self").mkdir()
    monkeypatch.setattr(live.probes, "PROC", str(tmp_path))
    return tmp_path


def u64(values):
    return np.asarray(values, dtype="<u8").tobytes()


# --------------------------------------------------------------- the package's shape


def _imported_modules(path):
    """Full names of what a file of thplab/live imports: modules, and ``module.name`` for each name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "thplab.live" if node.level == 1 else "thplab" if node.level == 2 else ""
            module = ".".join(filter(None, [base, node.module]))
            if node.module is not None:
                names.add(module)
            # An imported name may be a submodule: `from thplab import live`.
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


#: The modules of thplab/live in the order of the package docstring: each may
#: import only those before it (so there is no cycle), never the package.
LIVE_LAYERS = ("formats", "probes", "syscalls", "experiments", "runs", "comparison", "report",
               "child")


def test_live_modules_import_in_one_direction():
    assert sorted(LIVE_LAYERS) == LIVE_MODULES
    for i, name in enumerate(LIVE_LAYERS):
        imported = _imported_modules(LIVE_PACKAGE / f"{name}.py")
        assert "thplab.live" not in imported, f"thplab.live.{name} imports the package itself"
        siblings = {module.split(".")[2] for module in imported if module.startswith("thplab.live.")}
        assert siblings <= set(LIVE_LAYERS[:i]), f"thplab.live.{name} imports {siblings}"


@pytest.mark.parametrize("module", LIVE_MODULES)
def test_live_module_imports_alone(module):
    """Each module imports first thing in a fresh interpreter (no cycle, no import-order luck)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, "-W", "error", "-c", f"import thplab.live.{module}"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert child.returncode == 0, child.stderr


# --------------------------------------------------------------- parsers


@pytest.mark.parametrize("text, choice", [
    ("always [madvise] never\n", "madvise"),
    ("[always] madvise never", "always"),
    ("always defer defer+madvise [madvise] never\n", "madvise"),
    ("always [inherit] madvise never\n", "inherit"),
])
def test_parse_sysfs_choice(text, choice):
    assert live.parse_sysfs_choice(text) == choice


@pytest.mark.parametrize("text", ["always madvise never", "", "[always] [never]", "[ ]"])
def test_parse_sysfs_choice_rejects_malformed(text):
    with pytest.raises(ValueError, match="bracketed"):
        live.parse_sysfs_choice(text)


def test_parse_vmstat_sample():
    counters = live.parse_vmstat((DATA / "proc" / "vmstat").read_text())
    assert counters["thp_fault_alloc"] == 148
    assert counters["nr_anon_transparent_hugepages"] == 0
    assert len(counters) > 150


def test_parse_vmstat_skips_malformed_lines():
    text = "nr_free_pages 10\ngarbage\nthp_split_pmd x1\na b c\n\nthp_fault_alloc 2\nneg -3\n"
    assert live.parse_vmstat(text) == {"nr_free_pages": 10, "thp_fault_alloc": 2, "neg": -3}


def test_thp_counters_selects_thp_entries():
    counters = {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 2, "nr_free_pages": 3,
                "pgfault": 4}
    assert live.thp_counters(counters) == {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 2}


def test_vmstat_delta_keeps_core_events_and_moved_ones():
    before = {"thp_fault_alloc": 5, "thp_split_pmd": 2, "thp_swpout": 1, "thp_zero_page_alloc": 0,
              "pgfault": 100}
    after = {"thp_fault_alloc": 6, "thp_split_pmd": 2, "thp_swpout": 3, "thp_zero_page_alloc": 0,
             "pgfault": 900, "thp_new_in_after": 7}
    assert live.vmstat_delta(before, after) == {
        "thp_fault_alloc": 1, "thp_split_pmd": 0, "thp_swpout": 2}


def test_parse_smaps_sample():
    vmas = live.parse_smaps((DATA / "proc" / "self" / "smaps").read_text())
    assert [vma.perms for vma in vmas] == ["r--p", "rw-p", "r--p", "rw-p", "rw-p"]
    libc, before, readonly, after, rest = vmas
    assert libc.pathname.endswith("libc.so.6") and libc.inode > 0
    assert (readonly.start, readonly.end) == (THP_START + 0x100000, THP_START + 0x110000)
    assert readonly.fields["Rss"] == 64 and readonly.fields["AnonHugePages"] == 0
    assert readonly.fields["THPeligible"] == 0
    assert "hg" in readonly.vmflags and "hg" not in rest.vmflags
    assert before.fields["Anonymous"] + readonly.fields["Anonymous"] + after.fields["Anonymous"] == 2048


def test_parse_smaps_skips_malformed_lines():
    text = ("Rss: 4 kB\n"  # before any header: ignored
            "7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n"
            "Rss:                   4 kB\n"
            "not a field line\n"
            "AnonHugePages: lots kB\n"
            "VmFlags: rd wr\n"
            "zzzz-yyyy broken header\n")
    (vma,) = live.parse_smaps(text)
    assert vma.fields == {"Rss": 4}
    assert vma.vmflags == ("rd", "wr") and vma.pathname == ""


def test_parse_kernel_config():
    text = "CONFIG_TRANSPARENT_HUGEPAGE=y\n# CONFIG_NO_PAGE_MAPCOUNT is not set\nCONFIG_X=\"a b\"\n"
    assert live.parse_kernel_config(text, ["CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_NO_PAGE_MAPCOUNT",
                                           "CONFIG_X"]) == {
        "CONFIG_TRANSPARENT_HUGEPAGE": "y", "CONFIG_NO_PAGE_MAPCOUNT": None, "CONFIG_X": '"a b"'}


# --------------------------------------------------------------- decoders


def test_decode_pagemap_bits():
    swap = live.PM_SWAP | (1234 << live.MAX_SWAPFILES_SHIFT) | 3
    entries = [
        live.PM_PRESENT | live.PM_MMAP_EXCLUSIVE | live.PM_SOFT_DIRTY | 0x12345,
        live.PM_PRESENT | live.PM_FILE | 0x7,
        swap,
        live.PM_PRESENT | live.PM_UFFD_WP | live.PM_PFRAME_MASK,
        0,
    ]
    decoded = live.decode_pagemap(u64(entries))
    assert decoded["present"].tolist() == [True, True, False, True, False]
    assert decoded["pfn"].tolist() == [0x12345, 7, -1, live.PM_PFRAME_MASK, -1]
    assert decoded["exclusive"].tolist() == [True, False, False, False, False]
    assert decoded["soft_dirty"].tolist() == [True, False, False, False, False]
    assert decoded["file_shared"].tolist() == [False, True, False, False, False]
    assert decoded["uffd_wp"].tolist() == [False, False, False, True, False]
    assert decoded["swapped"].tolist() == [False, False, True, False, False]
    assert decoded["swap_type"].tolist() == [-1, -1, 3, -1, -1]
    assert decoded["swap_offset"].tolist() == [-1, -1, 1234, -1, -1]


def test_decode_pagemap_accepts_arrays():
    raw = np.array([live.PM_PRESENT | 42], dtype=np.uint64)
    assert live.decode_pagemap(raw)["pfn"].tolist() == [42]


def test_kpf_bits_are_the_kernel_numbers():
    # include/uapi/linux/kernel-page-flags.h and pagemap.rst
    assert (live.KPF_ANON, live.KPF_COMPOUND_HEAD, live.KPF_COMPOUND_TAIL, live.KPF_HUGE,
            live.KPF_THP, live.KPF_ZERO_PAGE, live.KPF_PGTABLE) == (12, 15, 16, 17, 22, 24, 26)
    assert live.KPF_NAMES[22] == "KPF_THP" and live.KPF_NAMES[10] == "KPF_BUDDY"


def test_kpageflags_decoders():
    head = (1 << live.KPF_ANON) | (1 << live.KPF_COMPOUND_HEAD) | (1 << live.KPF_THP)
    tail = (1 << live.KPF_COMPOUND_TAIL) | (1 << live.KPF_THP) | (1 << 60)
    flags = np.array([head, tail, 0], dtype=np.uint64)
    assert live.kpf_test(flags, live.KPF_THP).tolist() == [True, True, False]
    assert live.kpf_test(flags, live.KPF_COMPOUND_HEAD).tolist() == [True, False, False]
    assert live.kpageflags_names(head) == ["KPF_ANON", "KPF_COMPOUND_HEAD", "KPF_THP"]
    assert live.kpageflags_names(tail) == ["KPF_COMPOUND_TAIL", "KPF_THP", "bit60"]
    assert live.kpageflags_names(0) == []


# --------------------------------------------------------------- probes on samples


def test_read_thp_settings_sample(sample_paths):
    settings = live.read_thp_settings()
    assert settings.available and settings.reason == ""
    assert (settings.enabled, settings.defrag) == ("madvise", "madvise")
    assert settings.hpage_pmd_size == 2 << 20 and settings.use_zero_page is True
    assert settings.pmd_size_enabled == "inherit" and settings.process_thp_enabled is True
    assert settings.madvise_thp_usable


@pytest.mark.parametrize("path, text, why", [
    ("enabled", "always madvise [never]\n", "[never]"),
    ("hugepages-2048kB/enabled", "always inherit madvise [never]\n", "hugepages-2048kB"),
])
def test_thp_disabled_is_reported(sys_thp, path, text, why):
    (sys_thp / path).write_text(text)
    settings = live.read_thp_settings()
    assert settings.available and not settings.madvise_thp_usable
    assert why in live.thp_unavailable_reason()


def test_process_thp_disable_is_reported(sys_thp, tmp_path, monkeypatch):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("Name:\tx\nTHP_enabled:\t0\n")
    monkeypatch.setattr(live.probes, "PROC", str(tmp_path))
    settings = live.read_thp_settings()
    assert settings.process_thp_enabled is False
    assert "PR_SET_THP_DISABLE" in live.thp_unavailable_reason()


def test_per_size_control_is_optional(sys_thp):
    shutil.rmtree(sys_thp / "hugepages-2048kB")
    settings = live.read_thp_settings()
    assert settings.pmd_size_enabled is None and settings.madvise_thp_usable


def test_missing_thp_sysfs(monkeypatch, tmp_path):
    monkeypatch.setattr(live.probes, "SYS_THP", str(tmp_path / "nothing"))
    settings = live.read_thp_settings()
    assert not settings.available and "does not exist" in settings.reason
    assert "does not exist" in live.thp_unavailable_reason()


def test_malformed_thp_sysfs(sys_thp):
    (sys_thp / "hpage_pmd_size").write_text("two megabytes\n")
    settings = live.read_thp_settings()
    assert not settings.available
    assert settings.reason.startswith(f"{sys_thp}/hpage_pmd_size: invalid literal")


def test_read_vmstat_sample(sample_paths):
    vmstat = live.read_vmstat()
    assert vmstat.available
    assert vmstat.thp()["thp_split_pmd"] == 93
    assert "pgfault" not in vmstat.thp()


def test_read_vmstat_missing_and_empty(fake_proc):
    missing = live.read_vmstat()
    assert not missing.available and "does not exist" in missing.reason
    (fake_proc / "vmstat").write_text("nonsense\n")
    empty = live.read_vmstat()
    assert not empty.available and "no 'name value' lines" in empty.reason


def test_read_smaps_range(sample_paths):
    smaps = live.read_smaps(THP_START, THP_SIZE)
    assert smaps.available
    assert smaps.summary() == {"nr_vmas": 3, "AnonHugePages": 0, "Rss": 2048, "Anonymous": 2048}
    assert live.read_smaps(THP_START + 0x100000, 4096).nr_vmas == 1
    assert live.read_smaps(0x1000, 4096).summary()["nr_vmas"] == 0


def test_read_smaps_other_process(sample_paths):
    smaps = live.read_smaps(THP_START, THP_SIZE, pid=4242)
    assert smaps.summary() == {"nr_vmas": 1, "AnonHugePages": 2048, "Rss": 2048, "Anonymous": 2048}
    assert "hg" in smaps.vmas[0].vmflags


def test_read_smaps_missing_process(sample_paths):
    smaps = live.read_smaps(THP_START, THP_SIZE, pid=1)
    assert not smaps.available and "does not exist" in smaps.reason


def test_read_pagemap_synthetic(fake_proc):
    entries = [live.PM_PRESENT | live.PM_MMAP_EXCLUSIVE | 1000, live.PM_PRESENT | 1001, 0,
               live.PM_SWAP | 1 << 5]
    # A sparse file: the entry of a page sits at 8 x its virtual page number.
    with open(fake_proc / "self" / "pagemap", "wb") as f:
        f.seek(8 * (THP_START // live.PAGE_SIZE))
        f.write(u64(entries))
    pagemap = live.read_pagemap(THP_START, 4 * live.PAGE_SIZE)
    assert pagemap.available and pagemap.pfns_visible and pagemap.reason == ""
    assert pagemap.pfn.tolist() == [1000, 1001, -1, -1]
    assert pagemap.exclusive.tolist() == [True, False, False, False]
    assert pagemap.swapped.tolist() == [False, False, False, True]


def test_read_pagemap_hidden_pfns(fake_proc):
    # What a process without CAP_SYS_ADMIN reads (v4.2+): present, PFN 0.
    (fake_proc / "self" / "pagemap").write_bytes(u64([live.PM_PRESENT | live.PM_MMAP_EXCLUSIVE] * 2))
    pagemap = live.read_pagemap(0, 2 * live.PAGE_SIZE)
    assert pagemap.available and not pagemap.pfns_visible
    assert "CAP_SYS_ADMIN" in pagemap.reason
    assert pagemap.pfn.tolist() == [-1, -1] and pagemap.present.all()


def test_read_pagemap_short_and_missing(fake_proc):
    assert "does not exist" in live.read_pagemap(0, live.PAGE_SIZE).reason
    (fake_proc / "self" / "pagemap").write_bytes(u64([live.PM_PRESENT | 5]))
    short = live.read_pagemap(0, 2 * live.PAGE_SIZE)
    assert not short.available and "short read" in short.reason


def test_read_pagemap_rejects_unaligned():
    with pytest.raises(ValueError, match="page-aligned"):
        live.read_pagemap(123, live.PAGE_SIZE)


def test_read_kpage_tables(fake_proc):
    flags = np.arange(100, dtype=np.uint64) * 3
    (fake_proc / "kpageflags").write_bytes(u64(flags))
    (fake_proc / "kpagecount").write_bytes(u64(np.arange(100) % 4))
    pfns = np.array([7, 8, 9, 42, -1, 7, 99, 150])  # runs, a repeat, unmapped, past the end
    got = live.read_kpageflags(pfns)
    assert got.available
    assert got.values.tolist() == [21, 24, 27, 126, 0, 21, 297, 0]
    assert live.read_kpagecount(pfns).values.tolist() == [3, 0, 1, 2, 0, 3, 3, 0]
    assert live.read_kpagecount([]).values.size == 0


def test_read_kpage_permission_denied(fake_proc, monkeypatch):
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith("kpageflags"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    got = live.read_kpageflags([1, 2])
    assert not got.available and "permission denied" in got.reason
    assert got.pfns.tolist() == [1, 2]


def test_read_kernel_config(fake_proc):
    assert not live.read_kernel_config().available
    (fake_proc / "config.gz").write_bytes(gzip.compress(b"CONFIG_PAGE_MAPCOUNT=y\n"))
    config = live.read_kernel_config()
    assert config.available and config.options["CONFIG_PAGE_MAPCOUNT"] == "y"
    assert config.options["CONFIG_NO_PAGE_MAPCOUNT"] is None


def test_not_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    probes = [live.read_thp_settings(), live.read_vmstat(), live.read_smaps(0, 4096),
              live.read_pagemap(0, 4096), live.read_kpageflags([1]), live.read_kpagecount([1]),
              live.read_kernel_config()]
    for probe in probes:
        assert not probe.available and "not Linux" in probe.reason
    result = live.run_experiment("fault")
    assert result.status == "unavailable" and "not Linux" in result.reason


def _unprobeable(how, monkeypatch, tmp_path):
    """Make this machine one the lab cannot probe: not Linux, or no /proc and /sys to read."""
    if how == "not Linux":
        monkeypatch.setattr(sys, "platform", "darwin")
        return "live probing unavailable: not Linux (sys.platform is 'darwin')"
    monkeypatch.setattr(live.probes, "PROC", str(tmp_path / "proc"))
    monkeypatch.setattr(live.probes, "SYS_THP", str(tmp_path / "sys-thp"))
    return f"live probing unavailable: {tmp_path}/sys-thp/enabled does not exist on this kernel"


@pytest.mark.parametrize("how", ["not Linux", "/proc unreadable"])
def test_unprobeable_machine_gets_one_line_and_the_recorded_run(how, monkeypatch, tmp_path, capsys):
    from thplab.lessons import live_lab

    why = _unprobeable(how, monkeypatch, tmp_path)
    assert live.main(["--experiment", "pin"]) == 0
    out, err = capsys.readouterr()
    assert err == why + "\n"
    recorded = live.load_recorded()
    pin = dataclasses.replace(recorded, experiments={"pin": recorded.experiments["pin"]})
    assert out == live.format_run(pin, live.KERNELS) + "\n"
    # The lesson's path: it says why, shows no live run, and the recorded run stands.
    run, text = live_lab.live_report()
    reason = why.removeprefix("live probing unavailable: ")
    assert run is None and text.startswith(f"Live experiments cannot run here: {reason}.")
    assert f"experiments: cannot run here ({reason})" in live_lab.live_status()
    assert {result.status for result in live.run_all().experiments.values()} == {"unavailable"}


def test_thplab_live_recorded_shows_the_recorded_run_not_this_machine(monkeypatch, tmp_path):
    """What the course website is built with: no probe of the build machine, the recorded run labelled."""
    import platform

    from thplab.lessons import live_lab

    monkeypatch.setenv("THPLAB_LIVE", "recorded")
    monkeypatch.setattr(platform, "release", lambda: "9.9.9-the-build-machine")
    monkeypatch.setattr(live.probes, "PROC", str(tmp_path / "no-proc"))
    monkeypatch.setattr(live.probes, "SYS_THP", str(tmp_path / "no-sys-thp"))
    recorded = live.load_recorded()
    assert live.recorded_only()
    assert live.thp_unavailable_reason().startswith("THPLAB_LIVE=recorded: ")
    label = f"RECORDED on Linux {recorded.kernel}, {recorded.date} -- not this machine"
    status = live_lab.live_status()
    assert status.splitlines()[0].startswith(label) and "9.9.9" not in status
    assert f"enabled=[{recorded.settings['enabled']}]" in status
    run, text = live_lab.live_report(levels=(0, 10, "v4.5"))
    assert run is None and text.startswith(label)
    assert text.endswith(live_lab.verdict_table(recorded, (0, 10, "v4.5")))


@pytest.mark.parametrize("value", ["yes", "live", "RECORDED"])
def test_thplab_live_takes_only_recorded(value, monkeypatch):
    monkeypatch.setenv("THPLAB_LIVE", value)
    with pytest.raises(BadArgument, match=f"THPLAB_LIVE='{value}': the only value it takes is 'recorded'"):
        live.recorded_only()
    monkeypatch.setenv("THPLAB_LIVE", "")
    assert not live.recorded_only()
    monkeypatch.delenv("THPLAB_LIVE")
    assert not live.recorded_only()


def test_unknown_experiment():
    with pytest.raises(ValueError, match="unknown experiment"):
        live.run_experiment("swapout")


# --------------------------------------------------------------- recorded run


def test_load_recorded():
    run = live.load_recorded()
    assert run.source == "recorded" and run.kernel and run.date
    assert set(run.experiments) == set(live.EXPERIMENTS)
    for result in run.experiments.values():
        assert result.source == "recorded" and result.status == "ok"
        assert result.kernel == run.kernel
        assert result.step("fault")["views"]["self"]["smaps"]["AnonHugePages"] == 2048


def test_save_and_load_round_trip(tmp_path):
    run = live.load_recorded()
    path = tmp_path / "run.json"
    live.save_run(run, path)
    again = live.load_recorded(path)
    assert again.to_dict() == run.to_dict()


# --------------------------------------------------------------- child processes

#: A ``sitecustomize`` for the processes of these tests: the experiment child,
#: once started, writes its pid to $THPLAB_TEST_HOLD and waits instead of
#: experimenting, and the parent starts it whatever this machine's THP allows.
HOLD_SITECUSTOMIZE = """
import os
if os.environ.get("THPLAB_TEST_HOLD"):
    import time
    from pathlib import Path
    from thplab.live import experiments, probes

    def hold(name):
        ready = Path(os.environ["THPLAB_TEST_HOLD"])
        ready.with_suffix(".tmp").write_text(str(os.getpid()))
        ready.with_suffix(".tmp").rename(ready)
        time.sleep(300)

    probes.thp_unavailable_reason = lambda: ""
    experiments.run = hold
"""

on_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (/proc)")


def _alive(pid):
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _poll(condition, timeout):
    """Wait until condition() holds, at most `timeout` seconds; return whether it did."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def held(tmp_path):
    """``(env, start)``: ``start(command)`` runs `command` with the held experiment child and
    returns ``(parent Popen, child pid)`` once that child waits."""
    (tmp_path / "sitecustomize.py").write_text(HOLD_SITECUSTOMIZE)
    ready = tmp_path / "child.pid"
    env = {**os.environ, "THPLAB_TEST_HOLD": str(ready),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    started = []

    def start(command, **popen):
        parent = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  **popen)
        started.append(parent)
        assert _poll(lambda: ready.exists() or parent.poll() is not None, 120)
        assert parent.poll() is None, parent.communicate()
        child = int(ready.read_text())
        started.append(child)
        return parent, child

    yield start
    for process in started:
        if isinstance(process, int):
            if _alive(process):
                os.kill(process, signal.SIGKILL)
        elif process.poll() is None:
            process.kill()
            process.communicate()


@on_linux
def test_experiment_child_dies_with_its_parent(held):
    parent, child = held([sys.executable, "-c",
                          "from thplab import live; live.run_experiment('fault', timeout=300)"])
    assert _alive(child)
    parent.kill()
    parent.communicate()
    assert _poll(lambda: not _alive(child), 30), f"experiment child {child} outlived its parent"


@on_linux
def test_die_with_parent_when_the_parent_is_gone_already():
    # A process whose parent died before its prctl() has another parent by
    # then: it must not wait for a signal that will never come.
    code = ("import sys; from thplab.live.syscalls import die_with_parent; "
            "die_with_parent(int(sys.argv[1])); print('alive')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(expected_parent):
        return subprocess.run([sys.executable, "-c", code, str(expected_parent)], env=env,
                              capture_output=True, text=True, timeout=120)

    orphan = start(os.getpid() + 1)  # its parent is this process, not that one
    assert orphan.returncode == -signal.SIGKILL and orphan.stdout == ""
    kept = start(os.getpid())
    assert kept.returncode == 0 and kept.stdout == "alive\n", kept.stderr


@on_linux
def test_ctrl_c_ends_the_cli_with_one_line(held):
    parent, child = held([sys.executable, "-m", "thplab", "live", "--experiment", "fault",
                          "--timeout", "300"], start_new_session=True)
    os.killpg(parent.pid, signal.SIGINT)  # Ctrl-C signals the terminal's whole foreground group
    out, err = parent.communicate(timeout=120)
    assert (parent.returncode, out, err) == (130, "", "thplab live: interrupted\n")
    assert _poll(lambda: not _alive(child), 30), f"experiment child {child} outlived Ctrl-C"


# --------------------------------------------------------------- the real kernel

def _live_skip_reason():
    if reason := live.thp_unavailable_reason():
        return reason
    # A page of our own, to see whether pagemap shows PFNs and kpageflags opens.
    page = np.ones(2 * live.PAGE_SIZE, dtype=np.uint8)
    addr = -(-page.ctypes.data // live.PAGE_SIZE) * live.PAGE_SIZE
    pagemap = live.read_pagemap(addr, live.PAGE_SIZE)
    if not pagemap.pfns_visible:
        return pagemap.reason or "pagemap shows no PFN"
    return live.read_kpageflags(pagemap.pfn).reason


LIVE_SKIP = _live_skip_reason()
needs_kernel = pytest.mark.skipif(bool(LIVE_SKIP), reason=f"live kernel probing: {LIVE_SKIP}")


@pytest.fixture(scope="module")
def real():
    """Runs an experiment on this machine's kernel once, and checks that it ran."""
    results = live.run_all().experiments

    def get(name):
        assert results[name].status == "ok", f"{name}: {results[name].reason}"
        return results[name]

    return get


def self_view(result, step):
    return result.step(step)["views"]["self"]


def samples(view):
    return {sample["index"]: sample for sample in view["samples"]}


@pytest.mark.live
@needs_kernel
def test_live_fault(real):
    step = real("fault").step("fault")
    view = step["views"]["self"]
    assert step["vmstat_delta"]["thp_fault_alloc"] >= 1
    assert view["smaps"]["AnonHugePages"] == 2048 and view["smaps"]["nr_vmas"] == 1
    assert view["mapped"] == 512 and view["mapping_thp"] == 512  # contiguous PFNs
    assert view["compound"] == 512 and view["thp"] == 512 and view["content_ok"]
    head, tail = samples(view)[0], samples(view)[1]
    assert head["compound_head"] and head["thp"] and "KPF_ANON" in head["flags"]
    assert tail["compound_tail"] and not tail["compound_head"] and tail["thp"]
    assert head["kpagecount"] == tail["kpagecount"] == 1


@pytest.mark.live
@needs_kernel
def test_live_partial_munmap(real):
    step = real("partial_munmap").step("munmap")
    view = step["views"]["self"]
    assert step["ret"] == 0 and step["vmstat_delta"]["thp_split_pmd"] >= 1
    assert view["mapped"] == 511 and view["content_ok"]  # the rest is still readable
    assert view["smaps"]["AnonHugePages"] == 0 and view["smaps"]["nr_vmas"] == 2
    middle = samples(view)[256]
    assert not middle["mapped"]
    assert samples(view)[255]["mapped"] and samples(view)[255]["kpagecount"] == 1


@pytest.mark.live
@needs_kernel
def test_live_mprotect(real):
    step = real("mprotect").step("mprotect")
    view = step["views"]["self"]
    assert step["vmstat_delta"]["thp_split_pmd"] >= 1
    assert view["smaps"]["nr_vmas"] == 3 and view["smaps"]["AnonHugePages"] == 0
    assert view["mapped"] == 512 and view["compound"] == 512 and view["content_ok"]


@pytest.mark.live
@needs_kernel
def test_live_fork(real):
    fork = real("fork")
    shared = fork.step("fork")["views"]
    for view in shared.values():
        assert view["smaps"]["AnonHugePages"] == 2048 and view["exclusive"] == 0
        assert {sample["kpagecount"] for sample in view["samples"]} == {2}
    cow = fork.step("child_write")
    assert cow["vmstat_delta"]["thp_split_pmd"] >= 1
    child, parent = cow["views"]["child"], cow["views"]["self"]
    assert child["content_ok"] and parent["content_ok"]
    assert not samples(child)[256]["mapping_thp"] and samples(child)[255]["mapping_thp"]
    assert parent["smaps"]["AnonHugePages"] == 2048
    alone = self_view(fork, "child_exit")
    assert {sample["kpagecount"] for sample in alone["samples"]} == {1}


@pytest.mark.live
@needs_kernel
def test_live_pin_blocks_split(real):
    pin = real("pin")
    assert pin.step("pin")["ret"] == live.PAGE_SIZE  # bytes vmsplice()d
    failed = pin.step("split_pinned")
    assert failed["ret"] == 0 and failed["vmstat_delta"]["thp_split_page_failed"] >= 1
    assert failed["views"]["self"]["compound"] == 512
    done = pin.step("split_unpinned")
    assert done["vmstat_delta"]["thp_split_page"] >= 1
    view = done["views"]["self"]
    assert not samples(view)[0]["compound_head"] and not samples(view)[0]["thp"]
    assert view["mapped"] == 511 and view["content_ok"]


@pytest.mark.live
@needs_kernel
def test_live_full_munmap(real):
    step = real("full_munmap").step("munmap")
    assert step["ret"] == 0
    view = step["views"]["self"]
    assert view["mapped"] == 0 and view["smaps"]["nr_vmas"] == 0


@pytest.mark.live
@needs_kernel
def test_live_timeout_is_contained():
    result = live.run_experiment("fault", timeout=0.01)
    assert result.status == "failed" and "timed out" in result.reason


# --------------------------------------------------------------- model side by side


def rows_of(result, levels=(0, 10)):
    return {(row.step, row.quantity): row for row in live.compare(result, levels)}


def test_predict_fault_level0():
    fault = live.predict("fault", 0)["fault"]
    assert fault["thp_fault_alloc"] == 1 and fault["nr_anon_transparent_hugepages"] == 1
    assert fault["AnonHugePages kB"] == 2048 and fault["page compound"] is True
    # v3.16: a PMD mapping is counted in the head's _mapcount only.
    assert (fault["kpagecount[0]"], fault["kpagecount[1]"]) == (1, 0)


def test_predict_levels_differ_where_the_rfc_changed_things():
    old, rfc = live.predict("mprotect", 0)["mprotect"], live.predict("mprotect", 10)["mprotect"]
    assert old["thp_split"] == 1 and old["page compound"] is False
    assert rfc["thp_split_pmd"] == 1 and rfc["page compound"] is True
    assert "thp_split" not in rfc


def test_compare_partial_munmap():
    rows = rows_of(live.load_recorded().experiments["partial_munmap"])
    compound = rows["munmap", "page compound"]
    assert compound.observed is True and compound.predicted == {0: False, 10: True}
    assert compound.verdict == {0: "differs", 10: "match"}
    assert "split_huge_page_pmd()" in compound.explanations[0]
    thp_split = rows["munmap", "thp_split"]
    assert thp_split.observed is None and thp_split.predicted == {0: 1, 10: None}
    assert thp_split.verdict == {0: "n/a", 10: "n/a"}
    assert rows["munmap", "thp_split_pmd"].verdict == {0: "n/a", 10: "match"}
    nr_thp = rows["munmap", "nr_anon_transparent_hugepages"]
    assert nr_thp.verdict == {0: "match", 10: "differs"} and "v4.5" in nr_thp.explanations[0]
    assert rows["munmap", "subpages mapped"].explanations == []
    # vmstat events that moved nowhere are left out.
    assert ("munmap", "thp_fault_alloc") not in rows


def test_compare_pin():
    rows = rows_of(live.load_recorded().experiments["pin"])
    assert rows["split_pinned", "thp_split_page_failed"].verdict == {0: "n/a", 10: "match"}
    assert rows["split_unpinned", "thp_split_page"].verdict == {0: "n/a", 10: "match"}
    assert rows["split_unpinned", "page compound"].verdict == {0: "match", 10: "match"}


def test_compare_fork_cow():
    rows = rows_of(live.load_recorded().experiments["fork"])
    alloc = rows["child_write", "thp_fault_alloc"]
    assert (alloc.observed, alloc.predicted, alloc.verdict) == (
        0, {0: 1, 10: 1}, {0: "differs", 10: "differs"})
    assert "3917c80280c9" in alloc.explanations[0]
    assert rows["fork", "kpagecount[0]"].verdict == {0: "match", 10: "match"}
    assert rows["fork", "kpagecount[1]"].verdict == {0: "differs", 10: "differs"}


# ------------------------------------------------- v4.5, and what came after it


def test_kernel_labels_name_every_model_kernel():
    assert [live.kernel_label(k) for k in (0, 4, 10, "v4.5")] == ["L0 v3.16", "L4", "L10 RFC v1", "v4.5 merged"]
    assert live.KERNELS == (0, 10, "v4.5") and live.MERGED in live.LEVEL_NAMES


def test_predict_v45_partial_munmap_keeps_the_thp_compound_and_queued():
    """v4.5 splits only the PMD, like RFC v1, and queues the THP: its subpages stay allocated."""
    v45, rfc = live.predict("partial_munmap", "v4.5")["munmap"], live.predict("partial_munmap", 10)["munmap"]
    for quantity in ("page compound", "subpages mapped", "VMAs", "thp_split_pmd", "AnonHugePages kB"):
        assert v45[quantity] == rfc[quantity], quantity
    assert v45["page compound"] is True and v45["thp_split_pmd"] == 1 and v45["thp_split_page"] == 0
    # v4.5 counts PMD-mapped THPs; RFC v1 kept v3.16's rule (the head's PTE is still there).
    assert (v45["nr_anon_transparent_hugepages"], rfc["nr_anon_transparent_hugepages"]) == (-1, 0)
    assert "thp_deferred_split_page" not in v45 and "thp_split" not in v45
    assert v45[live.SPLIT_QUEUE] == 1 and live.SPLIT_QUEUE not in rfc


def test_v45_predictions_are_the_machines():
    """predict() reads the same Machine a learner boots; the queued THP splits when the shrinker runs."""
    from thplab import Machine
    from thplab.page_flags import PageHead, Use

    m = Machine.boot(nr_pages=4096, kernel="v4.5", seed=0)
    pid, addr, head = m.map_thp()
    m.munmap(pid, addr + 256 * live.PAGE_SIZE, live.PAGE_SIZE)
    predicted = live.predict("partial_munmap", "v4.5")["munmap"]
    assert predicted["page compound"] == bool(PageHead(m.mem_map, head))
    assert predicted[live.SPLIT_QUEUE] == m.deferred_split_count() and m.split_queue() == [head]
    assert predicted["kpagecount[1]"] == int(m.page_mapcount(head + 1))
    assert m.mem_map["use"][head + 256] != Use.free
    before = m.vmstat["thp_split_page"]
    m.drop_caches(2)
    assert m.vmstat["thp_split_page"] == before + 1 and m.deferred_split_count() == 0
    assert m.mem_map["use"][head + 256] == Use.free and not PageHead(m.mem_map, head)


def test_compare_old_signature_is_unchanged():
    result = live.load_recorded().experiments["partial_munmap"]
    rows = rows_of(result)
    assert all(set(row.verdict) == {0, 10} and row.later == [] for row in rows.values())
    deferred = rows["munmap", "thp_deferred_split_page"]
    assert deferred.explanations == [live.EXPLANATIONS["thp_deferred_split_page"]]
    assert [row.quantity for row in live.compare(result)] == [row.quantity for row in live.compare(result, [0, 10])]
    assert "v4.5 merged" not in live.format_run(live.load_recorded())


def test_compare_v45_says_the_deferred_split_counter_came_later():
    entry = next(e for e in LATER if e.name == "thp_deferred_split_page")
    for name in ("partial_munmap", "pin"):
        rows = rows_of(live.load_recorded().experiments[name], live.KERNELS)
        row = rows["munmap", "thp_deferred_split_page"]
        assert row.observed == 1 and row.predicted["v4.5"] is None and row.verdict["v4.5"] == "n/a"
        assert row.later == [entry]
        assert row.explanations == [live.LATER_EXPLANATIONS["thp_deferred_split_page"]]
        assert f"Not in v4.5 (added in {entry.version})" in row.explanations[0]
        assert entry.link in row.explanations[0]
        # The queue that the counter counts into is v4.5's, as the text says.
        assert live.predict(name, "v4.5")["munmap"][live.SPLIT_QUEUE] == 1
        # Where neither has the event (v3.16's thp_split) nothing later is named.
        assert rows["munmap", "thp_split"].later == []


def test_compare_v45_names_pmd_split_on_cow_for_the_childs_write():
    rows = rows_of(live.load_recorded().experiments["fork"], live.KERNELS)
    cow = live.LATER_EXPLANATIONS["PMD split on COW"]
    differing = {key: row for key, row in rows.items() if row.verdict["v4.5"] == "differs"}
    assert {step for step, _ in differing} == {"child_write", "child_exit"}
    for row in differing.values():
        assert [e.name for e in row.later] == ["PMD split on COW"] and cow in row.explanations
        assert live.STEP_EXPLANATIONS[("fork", "child_write")] not in row.explanations
    assert "https://git.kernel.org/torvalds/c/3917c80280c9" in cow and "(v5.8, 3917c80280c9)" in cow
    alloc = rows["child_write", "thp_fault_alloc"]
    assert alloc.predicted == {0: 1, 10: 1, "v4.5": 1} and alloc.observed == 0
    # Where v4.5 matches, the COW is not why the older kernels differ: the mapcount rules are.
    row = rows["child_write", "kpagecount[256]"]
    assert row.verdict == {0: "differs", 10: "differs", "v4.5": "match"} and row.later == []
    assert row.explanations == [live.EXPLANATIONS["kpagecount"]]
    fork = rows["fork", "kpagecount[1]"]
    assert fork.predicted == {0: 0, 10: 0, "v4.5": 2} and fork.verdict["v4.5"] == "match"


def test_compare_v45_unexplained_where_no_later_change_fits():
    result = copy.deepcopy(live.load_recorded().experiments["mprotect"])
    result.step("mprotect")["vmstat_delta"]["nr_anon_transparent_hugepages"] = 0
    row = rows_of(result, live.KERNELS)["mprotect", "nr_anon_transparent_hugepages"]
    assert row.verdict == {0: "differs", 10: "match", "v4.5": "differs"}
    assert row.later == [] and row.explanations[-1] == live.UNEXPLAINED


def test_compare_v45_names_no_page_mapcount_only_where_the_run_says_so():
    result = copy.deepcopy(live.load_recorded().experiments["fault"])
    sample = next(s for s in result.steps[0]["views"]["self"]["samples"] if s["index"] == 1)
    sample["kpagecount"] = 0
    row = rows_of(result, live.KERNELS)["fault", "kpagecount[1]"]
    assert row.verdict["v4.5"] == "differs" and row.later == [] and live.UNEXPLAINED in row.explanations
    result.notes.append(live.experiments.NO_PAGE_MAPCOUNT_NOTE)
    row = rows_of(result, live.KERNELS)["fault", "kpagecount[1]"]
    assert [e.name for e in row.later] == ["CONFIG_NO_PAGE_MAPCOUNT"]
    assert live.LATER_EXPLANATIONS["CONFIG_NO_PAGE_MAPCOUNT"] in row.explanations


@pytest.mark.parametrize("kernel", ["v9", 11, -1, None, True, 2.0])
def test_unknown_model_kernel_is_refused(kernel):
    from thplab.errors import ThplabError

    with pytest.raises(ThplabError):
        live.compare(live.load_recorded().experiments["fault"], (0, kernel))


def test_format_run_labels_recorded():
    text = live.format_run(live.load_recorded())
    assert "RECORDED on another machine, not a live reading" in text and "LIVE" not in text
    assert "L0 v3.16" in text and "L10 RFC v1" in text
    assert "== pin:" in text and "thp_split_page_failed" in text
    assert text.count("note: /proc/vmstat counters are system-wide") == 1


def test_main_recorded(capsys):
    assert live.main(["--recorded", "--experiment", "mprotect", "--levels", "0", "4"]) == 0
    out = capsys.readouterr().out
    assert "RECORDED" in out and "== mprotect:" in out and "== fault:" not in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("step"))
    assert header.split()[-3:] == ["L0", "v3.16", "L4"]


def test_main_recorded_compares_with_v45_by_default(capsys):
    assert live.main(["--recorded", "--experiment", "partial_munmap"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("step"))
    assert header.split()[-7:] == ["L0", "v3.16", "L10", "RFC", "v1", "v4.5", "merged"]
    assert "kernel='v4.5'" in out and "Not in v4.5 (added in" in out
    assert live.main(["--recorded", "--experiment", "fork", "--levels", "10", "v4.5"]) == 0
    assert "PMD split on COW (v5.8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        live.main(["--recorded", "--levels", "v9"])
    assert "neither a series level" in capsys.readouterr().err


def test_main_json(capsys):
    assert live.main(["--recorded", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "recorded" and set(data["experiments"]) == set(live.EXPERIMENTS)


def test_main_falls_back_to_recorded(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(live.probes, "SYS_THP", str(tmp_path / "no-thp"))
    assert live.main(["--experiment", "fault"]) == 0
    captured = capsys.readouterr()
    assert "live probing unavailable" in captured.err and "does not exist" in captured.err
    assert "RECORDED" in captured.out


@pytest.mark.live
@needs_kernel
def test_main_live(capsys, tmp_path):
    path = tmp_path / "run.json"
    assert live.main(["--experiment", "fault", "--record", str(path)]) == 0
    assert "(LIVE, this machine)" in capsys.readouterr().out
    assert live.load_recorded(path).experiments["fault"].status == "ok"


def test_progress_printer_shows_each_experiment_as_it_starts_and_ends():
    import io

    from thplab.live.report import progress_printer

    out = io.StringIO()
    progress = progress_printer(out)
    progress(1, 2, "fault", None)
    assert out.getvalue() == "thplab live: 1/2 fault ..."
    progress(1, 2, "fault", types.SimpleNamespace(status="ok"))
    progress(2, 2, "fork", None)
    progress(2, 2, "fork", types.SimpleNamespace(status="failed"))
    assert out.getvalue().splitlines() == ["thplab live: 1/2 fault ... ok", "thplab live: 2/2 fork ... failed"]


@pytest.mark.live
@needs_kernel
def test_run_all_reports_progress_before_and_after_each_experiment():
    seen = []
    run = live.run_all(["fault", "pin"], progress=lambda *a: seen.append((a[0], a[1], a[2], a[3] is None)))
    assert seen == [(1, 2, "fault", True), (1, 2, "fault", False), (2, 2, "pin", True), (2, 2, "pin", False)]
    assert set(run.experiments) == {"fault", "pin"}
