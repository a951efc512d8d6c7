"""Norse's feed-forward steps with the step's own spike detached: the ``"eprop"`` variant."""

from __future__ import annotations

import torch
from norse.torch.functional.iaf import IAFFeedForwardState
from norse.torch.functional.lif import LIFFeedForwardState
from norse.torch.functional.lif_adex import LIFAdExFeedForwardState
from norse.torch.functional.lif_box import LIFBoxFeedForwardState
from norse.torch.functional.lsnn import LSNNFeedForwardState
from norse.torch.functional.threshold import threshold


# ---------------------------------------------------------------------------- e-prop steps
# Norse's feed-forward steps with the step's own spike z_t detached in the reset gate: the e-prop
# variant, "no path through the layer's own spikes" into the membrane. The threshold adaptation
# of LSNN and AdEx keeps z_t's path, as the ALIF eligibility of Bellec et al. (2020) does
# (ε^a_{t+1} = ψ_t ε^v_t + (ρ - ψ_t β) ε^a_t: the adaptation sees the spike's pseudo-derivative).
# Copies of Norse 1.1.0's code apart from ``zc``; the tests check that their values equal
# Norse's bit for bit.
def _lif_eprop_step(input_tensor, state, p, dt=0.001):
    i_new = state.i + input_tensor
    dv = dt * p.tau_mem_inv * ((p.v_leak - state.v) + i_new)
    v_decayed = state.v + dv
    di = -dt * p.tau_syn_inv * i_new
    i_decayed = i_new + di
    z_new = threshold(v_decayed - p.v_th, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_decayed + zc * p.v_reset
    return z_new, LIFFeedForwardState(v=v_new, i=i_decayed)


def _lif_box_eprop_step(input_tensor, state, p, dt=0.001):
    dv = dt * p.tau_mem_inv * (input_tensor + p.v_leak - state.v)
    v_decayed = state.v + dv
    z_new = threshold(v_decayed - p.v_th, p.method, p.alpha)
    v_new = p.reset_method(z_new.detach(), v_decayed, p.v_reset, p.v_th)
    return z_new, LIFBoxFeedForwardState(v=v_new)


def _iaf_eprop_step(input_spikes, state, p, dt=0.001):
    v_new = state.v + input_spikes
    z_new = threshold(v_new - p.v_th, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_new + zc * p.v_reset
    return z_new, IAFFeedForwardState(v=v_new)


def _lsnn_eprop_step(input_tensor, state, p, dt=0.001):
    dv = dt * p.tau_mem_inv * ((p.v_leak - state.v) + state.i)
    v_decayed = state.v + dv
    di = -dt * p.tau_syn_inv * state.i
    i_decayed = state.i + di
    db = dt * p.tau_adapt_inv * (p.v_th - state.b)
    b_decayed = state.b + db
    z_new = threshold(v_decayed - b_decayed, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_decayed + zc * p.v_reset
    b_new = b_decayed + z_new * p.beta
    i_new = i_decayed + input_tensor
    return z_new, LSNNFeedForwardState(v=v_new, i=i_new, b=b_new)


def _lif_adex_eprop_step(input_spikes, state, p, dt=0.001):
    i_jump = state.i + input_spikes
    dv_leak = p.v_leak - state.v
    dv_exp = p.delta_T * torch.exp((state.v - p.v_th) / p.delta_T)
    dv = dt * p.tau_mem_inv * (dv_leak + dv_exp + i_jump - state.a)
    v_decayed = state.v + dv
    di = -dt * p.tau_syn_inv * i_jump
    i_decayed = i_jump + di
    da = dt * p.tau_ada_inv * (p.adaptation_current * (state.v - p.v_leak) - state.a)
    a_decayed = state.a + da
    z_new = threshold(v_decayed - p.v_th, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_decayed + zc * p.v_reset
    a_new = a_decayed + z_new * p.adaptation_spike
    return z_new, LIFAdExFeedForwardState(v_new, i_decayed, a_new)
