"""The compiled FBank kernel (numba): kept apart so numba's on-disk cache is hit in every process.

``fbank.compute_fbank_batch`` is the API; this module holds only the two compiled loops.  The
real FFT is KissFFT's algorithm (a complex FFT of n/2 points over (even, odd) sample pairs,
radix 4 then 2, then the real-signal post-pass) in float64, with twiddles planned once.
"""

import math

import numba
import numpy as np

fl = np.float64  # internal precision: see fbank's module docstring


@numba.njit(cache=True, nogil=True, fastmath=False)
def kiss_rfft(frame, perm, stages, tw_r, tw_i, st_r, st_i, zr, zi, outr, outi):
    """KissFFT's ``kiss_fftr``: ``n`` complex points from (even, odd) sample pairs, in float64."""
    n = zr.shape[0]
    two = fl(2.0)
    for j in range(n):
        q = perm[j]
        zr[j] = frame[2 * q]
        zi[j] = frame[2 * q + 1]
    for g in range(stages.shape[0]):
        p = stages[g, 0]
        m = stages[g, 1]
        fs = stages[g, 2]
        for b in range(0, n, p * m):
            if p == 4:
                for k in range(m):
                    i0 = b + k
                    i1 = i0 + m
                    i2 = i1 + m
                    i3 = i2 + m
                    a1r = tw_r[k * fs]
                    a1i = tw_i[k * fs]
                    a2r = tw_r[2 * k * fs]
                    a2i = tw_i[2 * k * fs]
                    a3r = tw_r[3 * k * fs]
                    a3i = tw_i[3 * k * fs]
                    s0r = zr[i1] * a1r - zi[i1] * a1i
                    s0i = zr[i1] * a1i + zi[i1] * a1r
                    s1r = zr[i2] * a2r - zi[i2] * a2i
                    s1i = zr[i2] * a2i + zi[i2] * a2r
                    s2r = zr[i3] * a3r - zi[i3] * a3i
                    s2i = zr[i3] * a3i + zi[i3] * a3r
                    s5r = zr[i0] - s1r
                    s5i = zi[i0] - s1i
                    zr[i0] += s1r
                    zi[i0] += s1i
                    s3r = s0r + s2r
                    s3i = s0i + s2i
                    s4r = s0r - s2r
                    s4i = s0i - s2i
                    zr[i2] = zr[i0] - s3r
                    zi[i2] = zi[i0] - s3i
                    zr[i0] += s3r
                    zi[i0] += s3i
                    zr[i1] = s5r + s4i
                    zi[i1] = s5i - s4r
                    zr[i3] = s5r - s4i
                    zi[i3] = s5i + s4r
            else:  # radix 2
                for k in range(m):
                    i0 = b + k
                    i1 = i0 + m
                    ar = tw_r[k * fs]
                    ai = tw_i[k * fs]
                    tr = zr[i1] * ar - zi[i1] * ai
                    ti = zr[i1] * ai + zi[i1] * ar
                    zr[i1] = zr[i0] - tr
                    zi[i1] = zi[i0] - ti
                    zr[i0] += tr
                    zi[i0] += ti
    outr[0] = zr[0] + zi[0]
    outi[0] = fl(0.0)
    for k in range(1, n // 2 + 1):
        f1r = zr[k] + zr[n - k]
        f1i = zi[k] - zi[n - k]
        f2r = zr[k] - zr[n - k]
        f2i = zi[k] + zi[n - k]
        tr = f2r * st_r[k] - f2i * st_i[k]
        ti = f2r * st_i[k] + f2i * st_r[k]
        outr[k] = (f1r + tr) / two
        outi[k] = (f1i + ti) / two
        outr[n - k] = (f1r - tr) / two
        outi[n - k] = -(f1i - ti) / two
    outr[n] = zr[0] - zi[0]
    outi[n] = fl(0.0)


@numba.njit(cache=True, nogil=True, fastmath=False)
def kernel(wave, utt_offsets, utt_frames, out_offsets, seeds, size, shift, snip, remove_dc,
           preemph, dither, window, padded, perm, stages, tw_r, tw_i, st_r, st_i,
           mel_first, mel_len, mel_w, use_power, use_log, out):
    n = padded // 2
    frame = np.zeros(padded, dtype=fl)
    zr = np.empty(n, dtype=fl)
    zi = np.empty(n, dtype=fl)
    power = np.empty(n + 1, dtype=fl)
    outr = np.empty(n + 1, dtype=fl)
    outi = np.empty(n + 1, dtype=fl)
    eps = np.float32(1.1920928955078125e-07)
    nbins = mel_first.shape[0]
    for u in range(utt_offsets.shape[0] - 1):
        w0 = utt_offsets[u]
        nsamp = utt_offsets[u + 1] - w0
        if dither != 0.0:
            np.random.seed(seeds[u])
        for t in range(utt_frames[u]):
            # --- ExtractWindow (reflection at the edges when not snipping) ---
            if snip:
                start = t * shift
            else:
                start = shift * t + shift // 2 - size // 2
            if start >= 0 and start + size <= nsamp:
                for s in range(size):
                    frame[s] = wave[w0 + start + s]
            else:
                for s in range(size):
                    i = start + s
                    while i < 0 or i >= nsamp:
                        if i < 0:
                            i = -i - 1
                        else:
                            i = 2 * nsamp - 1 - i
                    frame[s] = wave[w0 + i]
            for s in range(size, padded):
                frame[s] = fl(0.0)
            # --- ProcessWindow ---
            if dither != 0.0:
                for s in range(size):
                    frame[s] += fl(np.random.standard_normal()) * dither
            if remove_dc:
                acc = fl(0.0)
                for s in range(size):
                    acc += frame[s]
                mean = acc / fl(size)
                for s in range(size):
                    frame[s] -= mean
            if preemph != 0.0:
                for s in range(size - 1, 0, -1):
                    frame[s] -= preemph * frame[s - 1]
                frame[0] -= preemph * frame[0]
            for s in range(size):
                frame[s] *= window[s]
            # --- KissFFT real FFT, then the power spectrum ---
            kiss_rfft(frame, perm, stages, tw_r, tw_i, st_r, st_i, zr, zi, outr, outi)
            for k in range(n + 1):
                power[k] = outr[k] * outr[k] + outi[k] * outi[k]
            if not use_power:
                for k in range(n + 1):
                    power[k] = np.sqrt(power[k])
            # --- Mel filters (sequential float sums), floor, log ---
            row = out_offsets[u] + t
            c = 0
            for b2 in range(nbins):
                e = 0.0
                o = mel_first[b2]
                for k in range(mel_len[b2]):
                    e += mel_w[c + k] * power[o + k]
                c += mel_len[b2]
                if use_log:
                    if e < eps:
                        e = eps
                    e = math.log(e)
                out[row, b2] = e
    return out

