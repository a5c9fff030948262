"""One Markdown row per evaluated run, for ablation studies in docs/study/.

    python benchmarks/study_table.py exp/study/plus_base exp/study/plus_klp3 ...

Columns: epochs, deviations from the paper's objective and sizes that differ from its model, z_s purity (speech / image), z_a and z_i
purity and sample-probe accuracy, z_s rate, coherence with prior / reference style both ways,
own reconstructions judged correct (speech / image).  All from RUN/eval/metrics.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    m = json.loads((run / "eval" / "metrics.json").read_text())
    p, pr, r, c, g = m["purity"], m["probe"], m["rate"], m.get("coherence", {}), m.get("generation", {})
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    changes = {**(m.get("deviations") or {}), **(m.get("size_changes") or {})}
    dev = ", ".join(f"{k}={v}" for k, v in changes.items()) or "—"
    return " | ".join([
        run.name, str(m["epoch"]), dev,
        f"{pct(p['zs_speech']['mean'])} / {pct(p['zs_image']['mean'])}",
        f"{pct(p['za_speech']['mean'])} / {pct(pr['za_speech'])}",
        f"{pct(p['zi_image']['mean'])} / {pct(pr['zi_image'])}",
        f"{r['zs_speech']:.1f} / {r['zs_image']:.1f}",
        f"{pct(c['speech_to_image_prior'])} / {pct(c['image_to_speech_prior'])}",
        f"{pct(c['speech_to_image_ref'])} / {pct(c['image_to_speech_ref'])}",
        f"{pct(g['speech_own'])} / {pct(g['image_own'])}",
    ]).join(["| ", " |"])


HEADER = ("| run | epoch | deviations | z_s purity sp / im | z_a purity / probe | z_i purity / probe | "
          "z_s rate sp / im (nats) | coherence prior s→i / i→s | coherence ref s→i / i→s | own recon sp / im |\n"
          "|---|---|---|---|---|---|---|---|---|---|")

if __name__ == "__main__":
    print(HEADER)
    for a in sys.argv[1:]:
        print(row(Path(a)))
