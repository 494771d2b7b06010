"""Run ``tcr-assistant`` under a wall-clock sampling profiler covering every thread (cProfile and
pyinstrument see only the main thread; the controller's work happens in worker threads).

``python -m bench.profiling OUT.txt run --kubeconfig … …`` = ``tcr-assistant run …`` plus, on exit,
OUT.txt with the hottest stacks per thread group and the leaf functions where time goes, and
OUT.txt.collapsed (flame-graph input: ``stack count`` lines). Used by ``python -m bench.run --profile``.
"""

from __future__ import annotations

import collections
import re
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INTERVAL = 0.002


class Sampler:
    def __init__(self) -> None:
        self.stacks: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                group = re.sub(r"[-_ ]?\d+$", "", names.get(ident, "?"))
                self.stacks[group + ";" + ";".join(reversed(list(_walk(frame))))] += 1
            self.samples += 1
            time.sleep(INTERVAL)

    def report(self, out: Path) -> None:
        with (out.with_name(out.name + ".collapsed")).open("w") as f:
            for stack, n in self.stacks.most_common():
                f.write(f"{stack} {n}\n")
        by_group: collections.Counter[str] = collections.Counter()
        leaf: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for stack, n in self.stacks.items():
            group, *frames = stack.split(";")
            by_group[group] += n
            if frames:
                leaf[group][frames[-1]] += n
            for fn in set(frames):
                inclusive[group][fn] += n
        lines = [f"samples: {self.samples} every {INTERVAL * 1000:.0f} ms (wall clock, all threads)", ""]
        for group, total in by_group.most_common():
            lines.append(f"== thread group {group}: {total} thread-samples")
            lines.append("  leaf (self) functions:")
            for fn, n in leaf[group].most_common(15):
                lines.append(f"    {n / total * 100:5.1f}%  {fn}")
            lines.append("  inclusive:")
            for fn, n in inclusive[group].most_common(40):
                lines.append(f"    {n / total * 100:5.1f}%  {fn}")
            lines.append("")
        out.write_text("\n".join(lines))


def _walk(frame: FrameType | None) -> list[str]:
    out = []
    while frame is not None:
        code = frame.f_code
        out.append(f"{Path(code.co_filename).name}:{code.co_name}")
        frame = frame.f_back
    return out


def main() -> int:
    out = Path(sys.argv[1])
    from tcr_assistant.cli import main as cli_main

    sampler = Sampler()
    sampler.start()
    try:
        return cli_main(sys.argv[2:])
    finally:
        sampler.stop()
        sampler.report(out)


if __name__ == "__main__":
    sys.exit(main())
