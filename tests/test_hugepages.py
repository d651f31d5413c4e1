"""runtime.hugepages: only memory mapped after the snapshot, fully resident, goes onto 2 MB pages."""
import ctypes
import mmap
import time

from edgepack.runtime import hugepages as hp

MB2 = hp.HUGE
G = mmap.PAGESIZE


def test_subtract_keeps_only_what_was_not_mapped_before():
    before = [(10, 20), (50, 60), (90, 210), (250, 260)]
    assert hp.subtract([(0, 100), (200, 300)], before) == [(0, 10), (20, 50), (60, 90), (210, 250), (260, 300)]
    assert hp.subtract([(0, 100)], [(0, 100)]) == []
    assert hp.subtract([(0, 100)], []) == [(0, 100)]


def test_huge_runs_are_aligned_and_skip_ranges_with_holes():
    base = 64 * MB2
    holes = {base + 2 * MB2}  # the third 2 MB range is not fully resident
    runs = hp.huge_runs([(base - 4096, base + 5 * MB2 + 4096)], lambda a, n: a not in holes)
    assert runs == [(base, base + 2 * MB2), (base + 3 * MB2, base + 5 * MB2)]
    assert hp.huge_runs([(base + 1, base + MB2 + 1)], lambda a, n: True) == []  # no whole aligned 2 MB inside


def _anon_map(n_huge):
    """A private anonymous mapping holding at least n_huge whole aligned 2 MB ranges, fenced by a
    PROT_NONE page at each end so that the kernel never merges it with a neighbour; (mmap, (start, end))
    where start..end is the usable middle (mmap offsets G..-G)."""
    m = mmap.mmap(-1, (n_huge + 1) * MB2 + 2 * G, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr, G, 0) == 0 and libc.mprotect(addr + len(m) - G, G, 0) == 0
    return m, (addr + G, addr + len(m) - G)


def _fill(m, step=G):
    for i in range(G, len(m) - G, step):
        m[i] = 1


def _smaps(span):
    """(Rss kB, AnonHugePages kB) summed over the mappings inside span = (start, end)."""
    start, end = span
    rss = huge = 0
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                a, b = (int(x, 16) for x in head.split("-"))
                inside = a >= start and b <= end
            elif inside and head == "Rss:":
                rss += int(line.split()[1])
            elif inside and head == "AnonHugePages:":
                huge += int(line.split()[1])
    return rss, huge


def test_collapser_touches_only_new_fully_resident_memory():
    old, old_span = _anon_map(2)
    _fill(old)  # another model's weights, mapped before the snapshot
    before = hp.anon_ranges()
    new, new_span = _anon_map(4)
    _fill(new)
    sparse, sparse_span = _anon_map(2)
    _fill(sparse, 2 * G)  # half its pages: collapsing would commit the other half
    rss_sparse = _smaps(sparse_span)[0]

    c = hp.Collapser(before, background=False)
    if c.bytes:  # the kernel took it (Linux 6.1+, THP not "never")
        assert c.bytes >= 4 * MB2
        assert _smaps(new_span)[1] >= 4 * MB2 // 1024
    else:  # nothing changed, and it says why
        assert not hp.supported() or c.error
    assert _smaps(old_span)[1] == 0
    assert _smaps(sparse_span) == (rss_sparse, 0)
    assert new[G] == 1 and new[len(new) - 2 * G] == 1 and new[G + 1] == 0  # contents kept
    c.stop()
    for m in (old, new, sparse):
        m.close()


def test_stop_ends_a_background_collapse():
    before = hp.anon_ranges()
    m, _ = _anon_map(8)
    _fill(m)
    c = hp.Collapser(before)
    c.stop()
    assert c._thread is None or not c._thread.is_alive()
    assert c.seconds is not None
    m.close()


def test_collapse_waits_until_the_owner_is_idle():
    before = hp.anon_ranges()
    m, _ = _anon_map(4)
    _fill(m)
    idle = [False]
    c = hp.Collapser(before, idle=lambda: idle[0])
    time.sleep(0.2)
    assert c.bytes == 0 and c.seconds is None  # a generation holds the cores: nothing done yet
    idle[0] = True
    assert c.wait(timeout=60).seconds is not None  # done, not hung
    assert c.bytes >= 4 * MB2 or not hp.supported() or c.error
    m.close()
