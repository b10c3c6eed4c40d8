import numpy as np

from gradlog.analysis.robust import group_events, rolling_spikes, series_spikes, theil_sen


def _naive(
    x: np.ndarray, *, window: int, min_history: int, z: float, jump: float, min_mad: float
) -> list[int]:
    out = []
    for i in range(len(x)):
        prev = x[max(0, i - window) : i]
        prev = prev[np.isfinite(prev)]
        if len(prev) < min_history or not np.isfinite(x[i]):
            continue
        med = np.median(prev)
        mad = max(np.median(np.abs(prev - med)), min_mad)
        if (x[i] - med) / (1.4826 * mad) > z and x[i] - med > jump:
            out.append(i)
    return out


def test_rolling_spikes_matches_naive_reference() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, 2000)
    x[[100, 101, 700, 1500]] += [1.5, 1.2, 0.8, 3.0]
    x[50] = np.nan
    idx, _z, _ = rolling_spikes(
        x, window=50, min_history=10, z=6.0, min_jump=np.log10(3), min_mad=0.02
    )
    assert idx.tolist() == _naive(
        x, window=50, min_history=10, z=6.0, jump=np.log10(3), min_mad=0.02
    )
    assert {100, 1500} <= set(idx.tolist())


def test_theil_sen_and_events() -> None:
    x = np.arange(10.0)
    s, lo, hi = theil_sen(x, 2 * x + 1)
    assert s == 2.0
    assert lo <= 2.0 <= hi
    assert group_events(np.array([1, 2, 3, 20, 22, 40]), 5) == [(0, 2), (3, 4), (5, 5)]


def test_series_spikes_matches_rolling_spikes_per_series() -> None:
    rng = np.random.default_rng(2)
    lengths = np.array([600, 35, 9, 600, 400])  # a short one, one below min_history
    series = [rng.normal(0, 0.1, n) for n in lengths]
    series[0][[100, 300]] += 2.0
    series[3][450] += 1.0
    series[3][:5] -= 3.0  # low values just before: only the previous series' tail is lower
    series[1][200 % 35] = np.nan
    series[4][200:260] = np.nan  # a gap inside the window
    series[4][10] = np.inf
    kw = {"window": 50, "min_history": 10, "z": 6.0, "min_jump": np.log10(3), "min_mad": 0.02}
    idx, z, jump = series_spikes(np.concatenate(series), lengths, **kw)
    offsets = np.cumsum(lengths) - lengths
    want_idx, want_z, want_jump = [], [], []
    for off, x in zip(offsets, series, strict=True):
        i, a, b = rolling_spikes(x, **kw)
        want_idx += (i + off).tolist()
        want_z += a.tolist()
        want_jump += b.tolist()
    assert idx.tolist() == want_idx
    assert z.tolist() == want_z
    assert jump.tolist() == want_jump
    assert {100, offsets[3] + 450} <= set(idx.tolist())
