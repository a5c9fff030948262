"""Purity vs minutes and epochs of a training run, as a markdown table and a PNG.

    python benchmarks/train_curve.py RUN_DIR [--png docs/figures/pvae_fast_curve.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    rows = [json.loads(x) for x in (args.run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [r for r in rows if "purity_zs_speech" in r]
    print("| epoch | minutes | z_s purity speech | z_s purity images | contrastive | loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in evals:
        print(f"| {r['epoch']} | {r['minutes']:.1f} | {100 * r['purity_zs_speech']:.2f} % | "
              f"{100 * r['purity_zs_image']:.2f} % | {r['contrastive']:.3f} | {r['loss']:.1f} |")
    last = rows[-1]
    print(f"\n{len(rows)} epochs in {last['minutes']:.1f} min, "
          f"{sum(r['pairs_per_s'] for r in rows) / len(rows):.0f} pairs/s on average")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for key, name in (("purity_zs_speech", "z_s from speech"), ("purity_zs_image", "z_s from images")):
            ax[0].plot([r["minutes"] for r in evals], [100 * r[key] for r in evals], marker="o", label=name)
            ax[1].plot([r["epoch"] for r in evals], [100 * r[key] for r in evals], marker="o", label=name)
        for a, xl in zip(ax, ("training minutes (2-core CPU)", "epoch")):
            a.axhline(97, color="grey", ls="--", lw=1)
            a.set_xlabel(xl)
            a.set_ylabel("k-means purity (%)")
            a.grid(alpha=0.3)
            a.legend(loc="lower right")
        fig.suptitle(f"PVAE z_s purity on the test split ({args.run_dir.name})")
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=110)
        print(f"figure: {args.png}")


if __name__ == "__main__":
    main()
