"""The shared-line mode's formulas (csrc/cuda/shared_line.cuh, lines of 2049..8192),
transcribed step by step to PyTorch for one direction (top_down, chunked, G < C), against
``gspn_scan_ref`` and autograd in float64: an emulation of the equations the kernel implements,
not of the kernel. Run: python tools/checks/emulate_shared_line.py (prints the largest errors).
"""
import torch
from gspn2_dense.ops import gspn_scan_ref
torch.manual_seed(0)
B, C, G, H, W, chunk = 1, 4, 2, 7, 9, 3
x = torch.randn(B, C, H, W, dtype=torch.float64)
a = torch.randn(B, G, 3, H, W, dtype=torch.float64)
lam = torch.rand(B, C, H, W, dtype=torch.float64)
def taps(a_s, n):   # a_s: (3, n) logits of one step -> w (3, n), comp
    valid = torch.stack([torch.arange(n) >= 1, torch.ones(n, dtype=torch.bool), torch.arange(n) + 1 < n])
    sig = torch.sigmoid(a_s) * valid
    S = sig.sum(0)
    return sig / S, (1 - torch.sigmoid(a_s)), valid
def forward(x, a, lam):
    h = torch.zeros(B, C, H, W, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            g = c // (C // G)
            prev = torch.zeros(W, dtype=torch.float64)
            for s in range(H):
                start = s % chunk == 0 if chunk else s == 0
                cur = lam[b, c, s] * x[b, c, s]
                if not start:
                    w, _, _ = taps(a[b, g, :, s], W)
                    cur = cur + w[1] * prev
                    cur[1:] += w[0][1:] * prev[:-1]
                    cur[:-1] += w[2][:-1] * prev[1:]
                h[b, c, s] = cur
                prev = cur
    return h
def backward(go, x, a, lam, h):
    gx = torch.zeros_like(x); ga = torch.zeros_like(a); gl = torch.zeros_like(lam)
    for b in range(B):
        for c in range(C):
            g = c // (C // G)
            dh_next = torch.zeros(W, dtype=torch.float64)
            last = H - 1
            for s in range(last, -1, -1):
                cut = s == last or (chunk and (s + 1) % chunk == 0)
                start = s % chunk == 0 if chunk else s == 0
                d = go[b, c, s].clone()
                if not cut:
                    wn, _, _ = taps(a[b, g, :, s + 1], W)
                    d += wn[1] * dh_next
                    d[1:] += wn[2][:-1] * dh_next[:-1]    # tap +1 of pos - 1
                    d[:-1] += wn[0][1:] * dh_next[1:]     # tap -1 of pos + 1
                gl[b, c, s] = x[b, c, s] * d
                gx[b, c, s] = lam[b, c, s] * d
                gsum = torch.zeros(3, W, dtype=torch.float64)
                if not start:
                    hp = h[b, c, s - 1]
                    for k in range(3):
                        for pos in range(W):
                            q = pos + k - 1
                            if 0 <= q < W:
                                gsum[k, pos] = d[pos] * hp[q]
                w, comp, valid = taps(a[b, g, :, s], W)
                dot = (w * gsum).sum(0)
                ga[b, g, :, s] += torch.where(valid, w * comp * (gsum - dot), torch.zeros(()))
                dh_next = d
    return gx, ga, gl
leaves = [t.clone().requires_grad_() for t in (x, a, lam)]
ref = gspn_scan_ref(leaves[0], leaves[1], leaves[2], 'top_down', chunk=chunk)
h = forward(x, a, lam)
print('forward', (h - ref).abs().max().item())
go = torch.randn_like(ref)
rg = torch.autograd.grad(ref, leaves, go)
eg = backward(go, x, a, lam, h)
for n, r, e in zip(('x', 'gates', 'lam'), rg, eg):
    print(n, (r - e).abs().max().item())
