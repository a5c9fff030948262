"""Run a trained model on a person's own spoken and written digits: the Python API
(:func:`load` -> :class:`CrossModal`) and what ``pvae-model generate`` does with files.

    import pvae_model
    m = pvae_model.load("exp/demo/pvae_fast")            # a run directory or an exported bundle
    image = m.speech_to_image(wave, sample_rate)         # [28, 28] in [0, 1]
    wave, rate = m.image_to_speech(image)                # float32 in [-1, 1]

Style (the private latent the decoder is given besides z_s): ``"prior"`` (the prior's mean),
``("seed", N)`` (drawn from the prior with seed N; ``num`` draws), ``("voice", NAME)`` (a training
speaker's voice, :mod:`pvae_model.voices`; NAME None: the typical voice), or a reference: a written
digit's z_i for speech -> image, a spoken digit's z_a (and its length) for image -> speech.
``style=None`` (the default) is each direction's own: speech in the typical voice where the model
has voices (the prior's mean otherwise), written digits in the prior's mean.  A voice is a style
of speech: written digits asked for with one take the prior's mean.  A bridge (latent
translation) has no private latent: prior style only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoints import RunIOError
from .frontend import InputError, SpeechFrontEnd, image_tensor, read_image
from .run_parts import DEFAULT_FRAMES, load_run_parts

class CrossModal:
    """A trained PVAE with its front end: spoken digits in, written digits out, and back."""

    def __init__(self, model, frontend: SpeechFrontEnd, speech_frames: int, kind: str = "pvae",
                 source: str = "", info: dict | None = None, voices: dict | None = None):
        from .voices import typical_voice

        self.model, self.frontend, self.speech_frames = model, frontend, int(speech_frames)
        self.kind, self.source, self.info = kind, source, info or {}
        self.voices = dict(voices or {})  # {training speaker: mean z_a}
        self.default_voice = typical_voice(self.voices)
        self.info["voices"] = {"names": list(self.voices), "default": self.default_voice}
        self.sample_rate = int(frontend.fbank["sample_rate"])
        self.vocoder = None  # Griffin-Lim; use_vocoder() sets a trained pvae_model.vocoder.Vocoder

    def use_vocoder(self, vocoder) -> "CrossModal":
        """Speak with ``vocoder`` (a trained :class:`pvae_model.vocoder.Vocoder`; None: Griffin-Lim)."""
        from .vocoder import check_fbank

        self.vocoder = None if vocoder is None else check_fbank(vocoder, self.frontend.fbank, self.source or "model")
        return self

    def wave(self, feats: torch.Tensor) -> np.ndarray:
        """Generated (normalised) FBank ``[T, D]`` -> waveform, with the vocoder or Griffin-Lim."""
        from .eval.audio_synth import fbank_to_wave

        return fbank_to_wave(feats.numpy(), self.frontend.fbank, self.frontend.cmvn, vocoder=self.vocoder)

    # ---- inputs ---------------------------------------------------------------------------
    def speech_features(self, audio, sample_rate: int | None = None, voice: dict | None = None) -> torch.Tensor:
        """A path, or a waveform and its rate -> the normalised ``[T, D]`` features (by ``voice``'s
        statistics, from :meth:`enrol`, when given)."""
        if isinstance(audio, (str, Path)):
            return self.frontend.read(audio, voice)
        if sample_rate is None:
            raise InputError("a waveform needs its sample_rate")
        return self.frontend.features(audio, sample_rate, voice=voice)

    def enrol(self, recordings: list) -> tuple[dict | None, list[str]]:
        """Several recordings of one voice -> its statistics for ``voice=`` (a run trained with
        ``cmvn: speaker``), and what was left out; ``None`` below about three words of speech."""
        return self.frontend.enrol(recordings)

    @staticmethod
    def image_input(image) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            return read_image(image)[0]
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy().squeeze()
        return image_tensor(image)[0]

    # ---- the two directions --------------------------------------------------------------
    @torch.no_grad()
    def speech_to_image(self, audio, sample_rate: int | None = None, style=None, num: int = 1,
                        voice: dict | None = None) -> np.ndarray:
        """Written digit(s) of a spoken one: ``[28, 28]`` (``[num, 28, 28]`` when num > 1), in [0, 1];
        ``voice``: the speaker's statistics (:meth:`enrol`)."""
        x = self.speech_features(audio, sample_rate, voice)
        style = "prior" if style is None or _is_voice(style) else style
        zs = self.model.encode_audio(x[None], torch.tensor([len(x)]))["s"][0]
        zi, _ = self._style("image", style, num, self.model.cfg.z_image)
        out = self.model.decode_image(zs.expand(len(zi), -1), zi).clamp(0, 1)[:, 0].numpy()
        return out[0] if num == 1 else out

    @torch.no_grad()
    def image_to_speech(self, image, style=None, num: int = 1, frames: int | None = None):
        """Spoken digit(s) of a written one: ``(wave, sample_rate)`` (a list of waves when num > 1)."""
        x = self.image_input(image)
        if style is None:
            style = ("voice", None) if self.voices else "prior"
        zs = self.model.encode_image(x[None])["s"][0]
        za, ref_frames = self._style("speech", style, num, self.model.cfg.z_audio)
        t = int(frames or ref_frames or self.speech_frames)
        feats = self.model.decode_audio(zs.expand(len(za), -1), za, torch.full((len(za),), t))
        waves = [self.wave(f[:t]) for f in feats]
        return (waves[0] if num == 1 else waves), self.sample_rate

    def _style(self, target: str, style, num: int, dim: int) -> tuple[torch.Tensor, int | None]:
        """``[num, dim]`` private latents (the prior mean, seeded prior draws, or a reference's),
        and the reference's length in frames when it is a spoken one."""
        if num < 1:
            raise InputError(f"num must be >= 1, got {num}")
        if isinstance(style, str) and style == "prior":
            if num > 1:
                raise InputError("num > 1 needs a seeded style (style=('seed', N)): the prior mean is one style")
            return torch.zeros(1, dim), None
        if isinstance(style, tuple) and len(style) == 2 and style[0] == "seed":
            g = torch.Generator().manual_seed(int(style[1]))
            return torch.randn(num, dim, generator=g), None
        if num > 1:
            raise InputError("num > 1 needs a seeded style: a reference or a voice is one style")
        if _is_voice(style):
            return self.voice(style[1])[None], None
        # a reference: a written digit gives z_i, a spoken one z_a (and its length)
        if target == "image":
            return self.model.encode_image(self.image_input(style)[None])["i"][0], None
        x = self.speech_features(style)
        return self.model.encode_audio(x[None], torch.tensor([len(x)]))["a"][0], len(x)

    def voice(self, name: str | None = None) -> torch.Tensor:
        """A training speaker's voice (its mean z_a); None: the typical voice."""
        if not self.voices:
            raise InputError(f"{self.source or 'this model'} has no voices (a bundle from before voices, "
                             "or a run whose training shards are gone): use the prior style")
        name = self.default_voice if name is None else name
        if name not in self.voices:
            raise InputError(f"voice {name!r}: not a training speaker of this model (voices: {', '.join(self.voices)})")
        return self.voices[name]


def _is_voice(style) -> bool:
    return isinstance(style, tuple) and len(style) == 2 and style[0] == "voice"


class BridgeCrossModal(CrossModal):
    """A latent-translation bridge with its two frozen base VAEs, behind the same interface.
    A bridge has no private latent: one output per input, prior style only."""

    def __init__(self, bridge, frontend: SpeechFrontEnd, speech_frames: int, source: str, info: dict):
        super().__init__(None, frontend, speech_frames, "bridge", source, info)
        self.bridge = bridge

    @staticmethod
    def _prior_only(style, num: int) -> None:
        if not (style is None or (isinstance(style, str) and style == "prior")) or num != 1:
            raise InputError("a bridge has no style latent: style prior and num 1 only")

    @torch.no_grad()
    def speech_to_image(self, audio, sample_rate: int | None = None, style=None, num: int = 1,
                        voice: dict | None = None) -> np.ndarray:
        self._prior_only(style, num)
        x = self.speech_features(audio, sample_rate, voice)
        return self.bridge.transfer_speech_to_image(x[None], torch.tensor([len(x)]))[0, 0].numpy()

    @torch.no_grad()
    def image_to_speech(self, image, style=None, num: int = 1, frames: int | None = None):
        self._prior_only(style, num)
        t = int(frames or self.speech_frames)
        feats = self.bridge.transfer_image_to_speech(self.image_input(image)[None], torch.tensor([t]))[0]
        return self.wave(feats[:t]), self.sample_rate


def _bridge(path) -> BridgeCrossModal:
    from .bridge import LoadedBridge
    from .bundle_bridge import bridge_front_end

    lb = LoadedBridge(path)
    frontend, frames = bridge_front_end(lb)
    return BridgeCrossModal(lb, frontend, frames, str(path), {"epoch": lb.epoch})


def load(path, checkpoint: str = "last", vocoder=None) -> CrossModal:
    """A trained model from a run directory (``checkpoint``: last, best or a file; a PVAE run or
    a bridge) or a bundle (``pvae-model export``; its weights are safetensors and never unpickled).
    ``vocoder``: a vocoder run directory (``pvae-model vocoder``) to speak with; a bundle that
    holds one speaks with its own; otherwise Griffin-Lim."""
    from .bundle import is_bundle
    from .run import run_kind

    if is_bundle(path):
        m = _from_bundle(path)
    elif run_kind(path) == "bridge":
        m = _bridge(path)
    else:
        p = load_run_parts(path, checkpoint)
        m = CrossModal(p["model"], p["frontend"], p["speech_frames"], p["kind"], str(path),
                       {"epoch": p["epoch"], "speakers": p["speakers"]}, p["voices"])
    if vocoder is not None:
        from .vocoder import load_vocoder

        m.use_vocoder(load_vocoder(vocoder))
    return m


def _from_bundle(path) -> CrossModal:
    from .bundle import read_bundle
    from .bundle_format import state_from_bundle
    from .config import TrainConfig
    from .models import build_model
    from .voices import voices_from_json

    cfg, state = read_bundle(path)
    from .bundle import bundle_vocoder

    vocoder = bundle_vocoder(path, cfg)
    if cfg.get("kind") == "bridge":
        from .bundle_bridge import bridge_from_bundle

        translator, frontend = bridge_from_bundle(cfg, state, path)
        return BridgeCrossModal(translator, frontend, cfg.get("speech_frames", DEFAULT_FRAMES), str(path),
                                {"epoch": cfg.get("epoch")}).use_vocoder(vocoder)
    try:
        tc = TrainConfig.from_dict(cfg["train_config"])
        frontend = SpeechFrontEnd(**{k: cfg["speech"][k] for k in ("fbank", "cmvn_mode", "cmvn", "vad")},
                                  floor_db=float(cfg["speech"].get("floor_db", 0.0)))
        model = build_model(tc.model, tc.pvae)
    except (KeyError, TypeError, ValueError) as e:
        raise RunIOError(f"{path}/config.json: not a usable bundle config ({e})") from None
    state_from_bundle(model, state, path)
    try:
        voices = voices_from_json(cfg.get("voices"), tc.pvae.z_audio, f"{path}/config.json")
    except ValueError as e:
        raise RunIOError(str(e)) from None
    m = CrossModal(model, frontend, cfg.get("speech_frames", DEFAULT_FRAMES), cfg.get("kind", "pvae"), str(path),
                   {"epoch": cfg.get("epoch"), "speakers": cfg.get("speakers")}, voices)
    return m.use_vocoder(vocoder)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph", ".aiff", ".aif", ".au", ".mp3", ".opus")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm")


def read_list(path) -> tuple[list[Path], list[Path]]:
    """A list file: one input per line (``#`` comments, blank lines skipped; relative paths are
    relative to the list), recordings and pictures told apart by their suffix."""
    path = Path(path)
    speech, images = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line) if Path(line).is_absolute() else path.parent / line
        if p.suffix.lower() in AUDIO_SUFFIXES:
            speech.append(p)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            raise InputError(f"{path}:{n}: {line}: neither a recording ({', '.join(AUDIO_SUFFIXES[:4])}, ...) "
                             f"nor a picture ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
    return speech, images


def parse_style(text: str | None):
    """``prior``, ``seed:N``, ``voice``, ``voice:NAME`` or a reference file -> the ``style`` argument
    of :class:`CrossModal` (None: each direction's default)."""
    if text is None:
        return None
    if text == "prior":
        return "prior"
    if text == "voice" or (text.startswith("voice:") and len(text) > 6):
        return ("voice", text[6:] or None)
    if text.startswith("seed:") and text[5:].lstrip("-").isdigit():
        return ("seed", int(text[5:]))
    if Path(text).is_file():
        return Path(text)
    raise InputError(f"--style {text}: expected prior, seed:N, voice, voice:NAME or an existing reference file")


def generate_files(m: CrossModal, speech: list, images: list, out, style=None, num: int = 1,
                   same_voice: bool = False) -> dict:
    """Each recording -> written digit(s) as PNG, each picture -> spoken digit(s) as WAV, in
    ``out``; ``out/generate.jsonl`` accounts for every input (written or rejected, with the reason)
    and names the style each was given.  A reference style applies to the direction whose style it
    is (a picture: speech -> image), a voice to speech; the other direction takes its default.
    ``same_voice``: the recordings are one speaker's, normalised by their joint statistics
    (:meth:`CrossModal.enrol`); each row says which CMVN it was read with."""
    import json

    import soundfile as sf
    from PIL import Image

    from pvae_data.io_utils import atomic_open

    from .data import MIN_SPEAKER_FRAMES

    voice = cmvn = None
    if same_voice and speech:  # enrolled before anything is written: a run that cannot is refused whole
        voice = m.enrol(speech)[0]
        cmvn = (f"voice: {voice['takes']} recordings, {voice['frames']} frames" if voice else
                f"utterance: under {MIN_SPEAKER_FRAMES} frames of speech in all, too few for the voice's statistics")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ref_is_image = isinstance(style, Path) and style.suffix.lower() in IMAGE_SUFFIXES
    s2i_style = None if _is_voice(style) or (isinstance(style, Path) and not ref_is_image) else style
    i2s_style = None if ref_is_image else style
    if m.voices and (i2s_style is None or i2s_style == ("voice", None)):
        i2s_style = ("voice", m.default_voice)  # named in generate.jsonl
    used, rows = set(), []

    def name(src: Path, what: str, k: int, suffix: str) -> Path:
        base = f"{src.stem}.{what}" + (f".{k}" if num > 1 else "")
        stem, i = base, 1
        while stem in used:
            i += 1
            stem = f"{base}-{i}"
        used.add(stem)
        return out / f"{stem}{suffix}"

    for src, direction in [(Path(p), "speech_to_image") for p in speech] + [(Path(p), "image_to_speech") for p in images]:
        row = {"input": str(src), "direction": direction,
               "style": _style_name(s2i_style if direction == "speech_to_image" else i2s_style)}
        try:
            if direction == "speech_to_image":
                if cmvn:
                    row["cmvn"] = cmvn
                imgs = m.speech_to_image(src, style=s2i_style, num=num, voice=voice)
                imgs, outs = (imgs[None] if num == 1 else imgs), []
                for k, img in enumerate(imgs):
                    dst = name(src, "to_image", k, ".png")
                    with atomic_open(dst, "wb") as f:
                        Image.fromarray((img * 255).round().astype(np.uint8)).save(f, format="PNG")
                    outs.append(str(dst))
            else:
                picture, notes = read_image(src)
                if notes:
                    row["notes"] = notes
                waves, rate = m.image_to_speech(picture, style=i2s_style, num=num)
                waves, outs = ([waves] if num == 1 else waves), []
                for k, wave in enumerate(waves):
                    dst = name(src, "to_speech", k, ".wav")
                    with atomic_open(dst, "wb") as f:
                        sf.write(f, wave, rate, format="WAV", subtype="PCM_16")
                    outs.append(str(dst))
            row["outputs"] = outs
        except InputError as e:
            row["rejected"] = str(e)
        rows.append(row)
    with atomic_open(out / "generate.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    rejected = [r for r in rows if "rejected" in r]
    return {"total": len(rows), "written": len(rows) - len(rejected), "rejected": rejected,
            "manifest": str(out / "generate.jsonl")}


def _style_name(style) -> str:
    """How generate.jsonl names a style: prior, seed:N, voice:NAME or the reference's path."""
    if style is None or style == "prior":
        return "prior"
    if _is_voice(style):
        return f"voice:{style[1]}" if style[1] else "voice"
    if isinstance(style, tuple):
        return f"seed:{style[1]}"
    return str(style)
