"""The controller law variants of reports/balancer/drift_variants.md on the drift suite's reachable sets.

Needs update_laws_variants.patch applied (its knobs are class/module attributes set from the JSON argument):
    git apply reports/balancer/drift_variants/update_laws_variants.patch
    OMP_NUM_THREADS=1 python reports/balancer/drift_variants/run_variant.py '{"gain":0.03,"cls":{"threshold":0}}'
Prints per target set and pattern: mean miss (avg and worst seed), worst window miss, share jitter (pp).
"""
import sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks")); sys.path.insert(0, str(ROOT))
import logging, numpy as np, torch
import balancer_drift as bd
from gradbalance import update_laws as ul
torch.set_num_threads(1)
logging.getLogger("gradbalance.balancer").setLevel(logging.ERROR)
import json
variant = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
settings = {"ema": variant.pop("ema", 0.9), "gain": variant.pop("gain", 0.1)}
for k, v in variant.pop("cls", {}).items(): setattr(ul.Controller, k, v)
for k, v in variant.pop("mod", {}).items(): setattr(ul, k, v)
pats = variant.pop("patterns", list(bd.PATTERNS)); seeds = variant.pop("seeds", [0,1,2])
tsets = variant.pop("targets", list(bd.REACHABLE))
t0=time.time(); worst = dict(mean=0, win=0, jit=0)
for name in tsets:
    for p in pats:
        sc=[bd.score(*bd.run("controller", p, bd.TARGET_SETS[name], s, 600, settings), bd.TARGET_SETS[name], 600, 100) for s in seeds]
        w={k:max(x[k] for x in sc) for k in sc[0]}
        print(f"{name:9s} {p:9s} mean {np.mean([x['mean_miss'] for x in sc]):5.2f} worst {w['mean_miss']:5.2f} win {w['window_miss']:5.2f} jit {w['jitter_pp']:5.2f} fac {w['max_factor']:.2f}", flush=True)
        worst['mean']=max(worst['mean'], w['mean_miss']); worst['win']=max(worst['win'], w['window_miss']); worst['jit']=max(worst['jit'], w['jitter_pp'])
print(sys.argv[1:], worst, f"{time.time()-t0:.0f}s")
