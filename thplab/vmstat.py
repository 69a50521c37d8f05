"""``/proc/vmstat``: zone counters and VM events, under their /proc names.

Mirrors ``include/linux/vm_event_item.h`` and ``mm/vmstat.c``.  Which THP
events exist depends on the series level (patch 05 replaces ``thp_split``
with three events), so the kernel supplies the event list.
"""

from .errors import VMBug

#: Zone counters thplab keeps (a subset of ``enum zone_stat_item``).
ZONE_COUNTERS = ("nr_free_pages", "nr_page_table_pages", "nr_anon_transparent_hugepages")


class VmStat:
    """The counters of one machine, readable like a dict: ``vmstat["thp_split"]``."""

    def __init__(self, events, live=None):
        self.names = ZONE_COUNTERS + tuple(events)
        self._values = dict.fromkeys(self.names, 0)
        #: Counters read from elsewhere at each access (``nr_free_pages``).
        self._live = dict(live or {})

    def count(self, name, n=1):
        """Add ``n``; an event that does not exist at this level is a model bug."""
        if name not in self._values:
            raise VMBug(f"count_vm_event({name}): no such event in this kernel "
                        f"(events here: {', '.join(self.names[len(ZONE_COUNTERS):])})")
        self._values[name] += n

    def __getitem__(self, name):
        if name in self._live:
            return self._live[name]()
        if name not in self._values:
            raise KeyError(f"{name!r} is not in /proc/vmstat of this kernel; "
                           f"it has {', '.join(self.names)}")
        return self._values[name]

    def __contains__(self, name):
        return name in self._values

    def __iter__(self):
        return iter(self.names)

    def items(self):
        return [(n, self[n]) for n in self.names]

    def as_dict(self):
        return dict(self.items())

    def text(self):
        """The lines ``/proc/vmstat`` would print for these counters."""
        return "\n".join(f"{n} {v}" for n, v in self.items())

    def copy(self):
        new = VmStat(())
        new.names = self.names
        new._values = {n: self[n] for n in self.names}
        new._live = {}
        return new

    def __repr__(self):
        return f"VmStat({self.as_dict()})"
