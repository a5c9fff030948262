"""The table of docs/voices.md's study from runs scored by ``benchmarks/score_new_voices.sh``: one
row per run, then each arm's mean, and each arm's mean change against the first arm.

    python benchmarks/new_voice_table.py control=exp/pad/pad_s1,exp/pad/pad_s2 arm=exp/x/x_s1,exp/x/x_s2

Columns (speech->image with the prior style, %): george (his 500 FSDD takes), espeak (12 espeak-ng
voices), worst espeak voice, espeak women (the f1 / f3 variants), the other eight espeak voices,
george recorded otherwise (mean of ten recordings), clipped, padded, Praat's child-like and
female-like george, and the seen speakers' test takes (``pvae-model evaluate``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("george", "espeak", "worst", "women", "other8", "recorded", "clipped", "padded", "child", "female", "seen")
WOMEN = ("+f1", "+f3")


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def scores(run: Path) -> dict:
    """The columns of one scored run (``RUN/new_voices``), in %."""
    d = run / "new_voices"
    george = _json_lines(d / "george.json")[0]
    espeak = _json_lines(d / "espeak.json")[0]
    per_voice = espeak["per_voice_listed"]  # a WAV the front end rejected counts as wrong
    names = json.loads((d / "espeak.names.json").read_text())  # espeak00 -> en-us+m1
    women = [float(v) for k, v in per_voice.items() if names[k].endswith(WOMEN)]
    others = [float(v) for k, v in per_voice.items() if not names[k].endswith(WOMEN)]
    recording = next(r for r in _json_lines(d / "recording.json") if r.get("statistics") == "one WAV")
    conditions = next(r for r in _json_lines(d / "conditions.json") if r.get("statistics") == "one WAV")
    rec = {k: v for k, v in recording.items() if k not in ("run", "epoch", "speaker", "n", "statistics")}
    seen = json.loads((run / "eval" / "metrics.json").read_text())["speaker_groups"]["seen"]["speech_to_image"]
    out = {"george": george["speech_to_image"], "espeak": espeak["speech_to_image"], "worst": espeak["worst_voice"],
           "women": sum(women) / len(women), "other8": sum(others) / len(others),
           "recorded": sum(rec.values()) / len(rec), "clipped": rec["clipped"], "padded": rec["padded"],
           "child": conditions["child"], "female": conditions["female"], "seen": seen}
    return {k: 100 * v for k, v in out.items()}


def _row(name: str, values: dict, sign: bool = False) -> str:
    fmt = "{:+.1f}" if sign else "{:.1f}"
    return f"| {name} | " + " | ".join(fmt.format(values[c]) for c in COLUMNS) + " |"


def main(argv: list[str]) -> None:
    if not argv or any("=" not in a for a in argv):
        raise SystemExit(__doc__)
    arms = {a.split("=", 1)[0]: [Path(r) for r in a.split("=", 1)[1].split(",") if r] for a in argv}
    print("| run | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    means = {}
    for arm, runs in arms.items():
        rows = [scores(r) for r in runs]
        for r, s in zip(runs, rows):
            print(_row(str(r), s))
        means[arm] = {c: sum(s[c] for s in rows) / len(rows) for c in COLUMNS}
    for arm, m in means.items():
        print(_row(f"**{arm}, mean of {len(arms[arm])}**", m))
    first = next(iter(means))
    for arm, m in list(means.items())[1:]:
        print(_row(f"**{arm} − {first}**", {c: m[c] - means[first][c] for c in COLUMNS}, sign=True))


if __name__ == "__main__":
    main(sys.argv[1:])
