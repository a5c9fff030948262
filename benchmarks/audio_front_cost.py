"""What pvae.departures.audio_front costs a training step: make demo's model (configs/pvae_fast.yaml's
departures) with and without the frequency-convolution front, stepped alternately in one process on
one thread (64 utterances of 60 frames), so that the ratio holds whatever the machine's load.

    PYTHONPATH=. python benchmarks/audio_front_cost.py
"""
import time, torch
from pvae_model.models.pvae import PVAE, PVAEConfig
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
B, T = 64, 60
batch = {"audio": torch.randn(B, T, 80, generator=g), "lengths": torch.randint(30, T + 1, (B,), generator=g),
         "image": torch.rand(B, 1, 28, 28, generator=g), "label": torch.randint(0, 10, (B,), generator=g)}
cfgs = {f: PVAEConfig(objective="plus", departures=dict(audio_input_norm="utterance", audio_decoder_position="relative",
                                                    private_free_nats=8.0, audio_front=f)) for f in ("none", "freq_conv")}
models = {f: PVAE(c) for f, c in cfgs.items()}
def step(m):
    m.zero_grad(); m(batch, generator=torch.Generator().manual_seed(1)).loss.backward()
for f, m in models.items(): step(m)
res = {f: [] for f in models}
for _ in range(4):
    for f, m in models.items():
        t = time.time(); step(m); res[f].append(time.time() - t)
print({f: round(sorted(v)[1], 3) for f, v in res.items()}, 'ratio', round(sorted(res['freq_conv'])[1] / sorted(res['none'])[1], 2))
print({f: sum(p.numel() for p in m.parameters()) for f, m in models.items()})
