"""The collider chain's fixed parameters (GeV units), shared by its stages."""

from __future__ import annotations

import math

import torch

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)

# parton level
M_LO, M_HI = 150.0, 1200.0
PT_MEAN = 20.0
# shower
RHO, LAMBDA_ROOT, LAMBDA, T_CUT, EPS, MAX_DEPTH = 0.5, 10.0, 1.5, 4.0, 1e-3, 64
# detector
ETA_MAX, EFFICIENCY, A_STOCH, B_CONST, E_THR = 2.5, 0.95, 0.5, 0.03, 1.0
# observation
N_MAX, DR_SEED = 128, 1.0
# parton-smeared variant
R_M, N_CELLS = 0.05, 4000
PRIOR_LOW, PRIOR_HIGH = (400.0, 5.0, 0.95), (600.0, 50.0, 1.05)
