"""The sidecar hands freed C-heap pages back (``_core.trim_memory``) once it is ready and
after each reload: glibc keeps pages freed below a live allocation mapped until asked."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_trim_memory_returns_pages_freed_below_a_live_allocation() -> None:
    code = textwrap.dedent(
        """
        from meshfast._core import trim_memory

        def anon_kib():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])

        # 32 MiB of 1 KiB blocks from the C heap (bytes objects this size bypass pymalloc),
        # then one kept above them so the heap cannot shrink from its top by itself.
        blocks = [bytes(1024) for _ in range(32 * 1024)]
        keep = bytes(1024)
        del blocks
        before = anon_kib()
        released = trim_memory()
        after = anon_kib()
        print(released, before - after)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    released, freed_kib = done.stdout.split()
    assert released == "True"
    assert int(freed_kib) > 16 * 1024, done.stdout
