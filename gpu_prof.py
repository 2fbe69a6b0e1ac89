import sys, time, cProfile, pstats, warnings, io
sys.path.insert(0, "benchmarks")
from pathlib import Path
import torch, quality
from skspectral import SpectralRegressor
X, y, task = quality.load("flights", Path(".data/tabular"))
for i, tr, te in quality.folds(X, y, task, [1]):
    Xtr, ytr = X.iloc[tr], y[tr]
warnings.simplefilter("ignore")
quality.warm_up("cuda")
SpectralRegressor(max_iter=2, random_state=0).fit(Xtr, ytr)
for it in (1, 2, 5, 10, 20):
    torch.cuda.synchronize(); t = time.perf_counter()
    m = SpectralRegressor(max_iter=it, random_state=1, n_iter_no_change=1000).fit(Xtr, ytr)
    torch.cuda.synchronize(); print("max_iter", it, "fit s", round(time.perf_counter() - t, 3), m.n_iter_, flush=True)
pr = cProfile.Profile(); pr.enable()
t = time.perf_counter()
m = SpectralRegressor(random_state=1).fit(Xtr, ytr)
torch.cuda.synchronize(); print("default fit s", round(time.perf_counter() - t, 3), m.n_iter_, flush=True)
pr.disable()
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(70); print(s.getvalue()[-14000:])
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25); print(s.getvalue()[-6000:])
