"""A trained PVAE run's model and what its inputs need (the speech front end, a spoken digit's
usual length, the speakers training heard, the voices it speaks in), without loading its test sets: what
:func:`pvae_model.load` and ``pvae-model export`` start from."""

from __future__ import annotations

import numpy as np

from .frontend import SpeechFrontEnd

DEFAULT_FRAMES = 60  # a spoken digit's length when neither a reference nor the data gives one


def load_run_parts(run_dir, checkpoint: str = "last") -> dict:
    """A trained PVAE run's model and everything its inputs need, without the test sets."""
    from pvae_data.shards.reader import AudioShards
    from .run import CONFIG, _run_config, load_cmvn, load_fbank_config, load_model, load_vad_config, run_kind, shard_dir

    kind = run_kind(run_dir)
    if kind is None:
        raise FileNotFoundError(f"{run_dir}: no {CONFIG}: not a run directory or a bundle")
    if kind != "pvae":
        raise ValueError(f"{run_dir} is a {kind} run: generation needs a PVAE run or a bridge")
    model, cfg, ck = load_model(run_dir, checkpoint, expect=kind)
    saved = _run_config(run_dir) or {}
    audio = shard_dir(run_dir, "audio_shards", str(saved.get("audio_shards", cfg.audio_shards)))
    fbank = load_fbank_config(audio)
    frontend = SpeechFrontEnd(fbank=fbank, cmvn_mode=cfg.cmvn, cmvn=load_cmvn(audio),
                             vad=load_vad_config(audio), floor_db=cfg.fbank_floor_db)
    try:
        lengths = AudioShards(audio, "test").lengths
        frames = int(np.median(lengths)) if len(lengths) else DEFAULT_FRAMES
    except (OSError, KeyError, ValueError):
        frames = DEFAULT_FRAMES
    from .eval.speakers import training_speakers
    from .voices import run_voices

    try:
        voices = run_voices(model, audio, cfg.cmvn, cfg.fbank_floor_db)
    except (OSError, KeyError, ValueError):
        voices = {}  # no training split to hear the voices from: the prior style (CrossModal says so)
    return {"kind": kind, "model": model, "cfg": cfg, "epoch": ck["epoch"], "frontend": frontend,
            "speech_frames": frames, "speakers": training_speakers(audio), "voices": voices}
