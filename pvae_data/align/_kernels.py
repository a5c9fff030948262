"""Compiled Viterbi loops (numba), kept apart so numba's on-disk cache is hit in every process.

Both decoders work on *positions*: a position is one HMM state occurrence in a decoding graph
(``state[p]`` = the model state whose emission it uses).  Scores are log-likelihoods.
"""

import numba
import numpy as np

NEG = -1.0e30


@numba.njit(cache=True, nogil=True)
def viterbi_graph(ll, state, pred, pred_lp, start_lp, end_lp):
    """Best path through a left-to-right graph with at most ``pred.shape[1]`` predecessors per position.

    ll [T, S] emission log-likelihoods; state [P]; pred [P, K] predecessor positions (-1: none);
    pred_lp [P, K] their transition log-probabilities; start_lp / end_lp [P] (NEG: not allowed).
    Returns (score, path [T] of positions); score is NEG and the path all -1 when no path fits.
    """
    T = ll.shape[0]
    P = state.shape[0]
    K = pred.shape[1]
    path = np.full(T, -1, np.int32)
    if T == 0 or P == 0:
        return NEG, path
    bp = np.empty((T, P), np.int32)
    delta = np.empty(P)
    new = np.empty(P)
    for p in range(P):
        delta[p] = start_lp[p] + ll[0, state[p]] if start_lp[p] > NEG else NEG
        bp[0, p] = -1
    for t in range(1, T):
        for p in range(P):
            best = NEG
            arg = -1
            for k in range(K):
                q = pred[p, k]
                if q < 0:
                    continue
                v = delta[q] + pred_lp[p, k]
                if v > best:
                    best = v
                    arg = q
            bp[t, p] = arg
            new[p] = best + ll[t, state[p]] if arg >= 0 and best > NEG else NEG
        for p in range(P):
            delta[p] = new[p]
    best = NEG
    arg = -1
    for p in range(P):
        if end_lp[p] > NEG and delta[p] > NEG:
            v = delta[p] + end_lp[p]
            if v > best:
                best = v
                arg = p
    if arg < 0:
        return NEG, path
    path[T - 1] = arg
    for t in range(T - 1, 0, -1):
        path[t - 1] = bp[t, path[t]]
    return best, path


@numba.njit(cache=True, nogil=True)
def viterbi_loop(ll, state, self_lp, next_lp, first, last, entry_lp):
    """Free loop over chains (words and silence in any order, any number): the recogniser.

    Positions of chain c are ``first[c]..last[c]`` (contiguous, left to right); each position
    loops (self_lp) or moves on (next_lp); leaving a chain's last position (its next_lp) enters
    any chain's first position with ``entry_lp[c]``.  Returns (score, path [T] of positions).
    """
    T = ll.shape[0]
    P = state.shape[0]
    C = first.shape[0]
    path = np.full(T, -1, np.int32)
    if T == 0:
        return NEG, path
    bp = np.empty((T, P), np.int32)
    delta = np.empty(P)
    new = np.empty(P)
    is_first = np.zeros(P, np.bool_)
    chain_of = np.empty(P, np.int32)
    for c in range(C):
        is_first[first[c]] = True
        for p in range(first[c], last[c] + 1):
            chain_of[p] = c
    for p in range(P):
        delta[p] = (entry_lp[chain_of[p]] + ll[0, state[p]]) if is_first[p] else NEG
        bp[0, p] = -1
    for t in range(1, T):
        best_exit = NEG
        exit_arg = -1
        for c in range(C):
            v = delta[last[c]] + next_lp[last[c]]
            if v > best_exit:
                best_exit = v
                exit_arg = last[c]
        for p in range(P):
            best = delta[p] + self_lp[p]
            arg = p
            if is_first[p]:
                v = best_exit + entry_lp[chain_of[p]]
                if v > best:
                    best = v
                    arg = exit_arg
            else:
                v = delta[p - 1] + next_lp[p - 1]
                if v > best:
                    best = v
                    arg = p - 1
            bp[t, p] = arg
            new[p] = best + ll[t, state[p]]
        for p in range(P):
            delta[p] = new[p]
    best = NEG
    arg = -1
    for c in range(C):
        v = delta[last[c]]
        if v > best:
            best = v
            arg = last[c]
    path[T - 1] = arg
    for t in range(T - 1, 0, -1):
        path[t - 1] = bp[t, path[t]]
    return best, path


@numba.njit(cache=True, nogil=True)
def logsumexp_groups(z, S, M):
    """[T, S*M] component log-densities -> [T, S] state log-likelihoods (log-sum-exp over M)."""
    T = z.shape[0]
    out = np.empty((T, S))
    for t in range(T):
        for s in range(S):
            base = s * M
            mx = z[t, base]
            for k in range(1, M):
                if z[t, base + k] > mx:
                    mx = z[t, base + k]
            acc = 0.0
            for k in range(M):
                acc += np.exp(z[t, base + k] - mx)
            out[t, s] = mx + np.log(acc)
    return out
