"""The tasks of the XRD reduction example: plain functions, standard library only.

A powder diffraction scan is simulated from a seed (Gaussian Bragg peaks on a
sloped background with an amorphous hump, recorded with a decaying incident
beam monitor and Poisson-like counting noise), then reduced the way a beamline
pipeline would:

1. `simulate_scan`: the raw scan (the data source; a real pipeline would read a file);
2. `normalise`: divide by the incident beam monitor;
3. `estimate_background` and `subtract_background`: an iteratively clipped polynomial;
4. `find_peaks`: local maxima of the smoothed pattern, with widths at half maximum;
5. `setup_fit`, `refine_step`, `check_convergence`, `summarise_fit`: a
   Levenberg-Marquardt fit of every peak at once, one step per execution of
   ``refine_step`` (``ppfmethod`` tasks: each takes and returns a dict that
   travels around the refinement loop);
6. `assess_quality` and `peak_table`: agreement factors, and d-spacings and
   crystallite sizes from Bragg's and Scherrer's laws;
7. `make_report`: one dict with everything a user looks at.

Every function is deterministic: the same inputs give the same outputs, on
every pool. Data travel as dicts and lists of floats, which pickle cheaply.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "assess_quality",
    "check_convergence",
    "estimate_background",
    "find_peaks",
    "make_report",
    "normalise",
    "peak_table",
    "refine_step",
    "setup_fit",
    "simulate_scan",
    "subtract_background",
    "summarise_fit",
]

# 4 ln 2: a Gaussian of full width at half maximum f is exp(-FWHM_FACTOR * (x - c)**2 / f**2).
FWHM_FACTOR = 4.0 * math.log(2.0)
# Area of a Gaussian of height 1 and FWHM 1: sqrt(pi / (4 ln 2)).
GAUSS_AREA = math.sqrt(math.pi / FWHM_FACTOR)
# The peaks of silicon (a common calibrant) with Cu K-alpha1 radiation.
SILICON_PEAKS: tuple[dict[str, Any], ...] = (
    {"hkl": "111", "two_theta": 28.443, "height": 2000.0, "fwhm": 0.30},
    {"hkl": "220", "two_theta": 47.303, "height": 1200.0, "fwhm": 0.34},
    {"hkl": "311", "two_theta": 56.123, "height": 700.0, "fwhm": 0.38},
)
# A Levenberg-Marquardt damping that never grows past this means the fit
# cannot improve any more: it sits in a minimum.
MAX_DAMPING = 1e10


# --------------------------------------------------------------------------- small numerics


def _solve(matrix: Sequence[Sequence[float]], rhs: Sequence[float]) -> list[float]:
    """Solve ``matrix @ x = rhs`` by Gaussian elimination with partial pivoting.

    Raises:
        ZeroDivisionError: the matrix is singular.
    """
    n = len(rhs)
    a = [[*map(float, row), float(b)] for row, b in zip(matrix, rhs, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if a[pivot][col] == 0.0:
            msg = "singular matrix"
            raise ZeroDivisionError(msg)
        a[col], a[pivot] = a[pivot], a[col]
        for row in range(col + 1, n):
            factor = a[row][col] / a[col][col]
            if factor:
                for k in range(col, n + 1):
                    a[row][k] -= factor * a[col][k]
    x = [0.0] * n
    for row in range(n - 1, -1, -1):
        acc = a[row][n] - sum(a[row][k] * x[k] for k in range(row + 1, n))
        x[row] = acc / a[row][row]
    return x


def _polyfit(x: Sequence[float], y: Sequence[float], degree: int) -> list[float]:
    """Least-squares polynomial coefficients, lowest order first (normal equations)."""
    size = degree + 1
    powers = [[xi**k for k in range(size)] for xi in x]
    normal = [[sum(p[i] * p[j] for p in powers) for j in range(size)] for i in range(size)]
    rhs = [sum(p[i] * yi for p, yi in zip(powers, y, strict=True)) for i in range(size)]
    return _solve(normal, rhs)


def _polyval(coefficients: Sequence[float], x: float) -> float:
    value = 0.0
    for c in reversed(coefficients):
        value = value * x + c
    return value


def _gaussian(x: float, height: float, centre: float, fwhm: float) -> float:
    return height * math.exp(-FWHM_FACTOR * (x - centre) ** 2 / (fwhm * fwhm))


def _model(x: Sequence[float], params: Sequence[float]) -> list[float]:
    """``params`` = [offset, height1, centre1, fwhm1, height2, ...]."""
    offset = params[0]
    peaks = [params[i : i + 3] for i in range(1, len(params), 3)]
    return [offset + sum(_gaussian(xi, h, c, f) for h, c, f in peaks) for xi in x]


def _chi2(pattern: dict[str, Any], params: Sequence[float]) -> float:
    """The reduced chi-square of ``params`` against the pattern."""
    model = _model(pattern["two_theta"], params)
    total = 0.0
    for y, m, s in zip(pattern["intensity"], model, pattern["sigma"], strict=True):
        total += ((y - m) / s) ** 2
    return total / max(1, len(model) - len(params))


def _normal_equations(pattern: dict[str, Any], params: Sequence[float]) -> tuple[list[list[float]], list[float]]:
    """``J^T W J`` and ``J^T W r`` of the weighted residuals at ``params``."""
    n = len(params)
    jtj = [[0.0] * n for _ in range(n)]
    jtr = [0.0] * n
    peaks = [params[i : i + 3] for i in range(1, n, 3)]
    for x, y, s in zip(pattern["two_theta"], pattern["intensity"], pattern["sigma"], strict=True):
        weight = 1.0 / s
        row = [weight]  # d model / d offset
        value = params[0]
        for h, c, f in peaks:
            d = x - c
            g = math.exp(-FWHM_FACTOR * d * d / (f * f))
            value += h * g
            row += [
                weight * g,
                weight * h * g * 2.0 * FWHM_FACTOR * d / (f * f),
                weight * h * g * 2.0 * FWHM_FACTOR * d * d / (f * f * f),
            ]
        residual = (y - value) * weight
        for i, ri in enumerate(row):
            if ri:
                jtr[i] += ri * residual
                jrow = jtj[i]
                for j in range(i, n):
                    jrow[j] += ri * row[j]
    for i in range(n):
        for j in range(i):
            jtj[i][j] = jtj[j][i]
    return jtj, jtr


# --------------------------------------------------------------------------- acquisition


def simulate_scan(
    *,
    seed: int = 0,
    sample: str = "Si",
    two_theta_min: float = 25.0,
    two_theta_max: float = 60.0,
    n_points: int = 701,
    peaks: Sequence[dict[str, Any]] = SILICON_PEAKS,
    background: dict[str, float] | None = None,
    monitor_mean: float = 1e5,
    beam_decay: float = 0.15,
    max_zero_shift: float = 0.05,
) -> dict[str, Any]:
    """Simulate a powder diffraction scan, deterministically from ``seed``.

    The seed draws a zero shift of the detector (every peak moves by it), a
    +-10 % scatter of the peak heights, and the counting noise.

    Args:
        seed: the pseudo-random seed.
        sample: a name carried into the report.
        two_theta_min: first angle, in degrees.
        two_theta_max: last angle, in degrees.
        n_points: number of angles.
        peaks: ``{"two_theta", "height", "fwhm", "hkl"}`` of each Bragg peak,
            at the nominal positions (degrees, counts at the mean monitor).
        background: ``constant``, ``slope`` (per degree), and an amorphous hump
            ``hump_height``, ``hump_centre``, ``hump_width`` (degrees).
        monitor_mean: mean incident beam monitor counts per point.
        beam_decay: relative loss of beam intensity over the scan.
        max_zero_shift: the zero shift is drawn uniformly in +- this (degrees).

    Returns:
        ``{"sample", "seed", "two_theta", "counts", "monitor", "true_peaks", "zero_shift"}``.
    """
    rng = random.Random(seed)
    bg = {"constant": 150.0, "slope": -1.5, "hump_height": 90.0, "hump_centre": 31.0, "hump_width": 7.0}
    bg.update(background or {})
    zero_shift = rng.uniform(-max_zero_shift, max_zero_shift)
    true_peaks: list[dict[str, Any]] = [
        {
            "hkl": str(p.get("hkl", "")),
            "two_theta": float(p["two_theta"]) + zero_shift,
            "height": float(p["height"]) * rng.uniform(0.9, 1.1),
            "fwhm": float(p["fwhm"]),
        }
        for p in peaks
    ]
    step = (two_theta_max - two_theta_min) / (n_points - 1)
    two_theta = [two_theta_min + i * step for i in range(n_points)]
    monitor = []
    counts = []
    for i, x in enumerate(two_theta):
        # The beam decays over the scan, with a small periodic ripple.
        m = monitor_mean * (1.0 - beam_decay * i / n_points) * (1.0 + 0.02 * math.sin(i / 17.0))
        expected = (
            bg["constant"]
            + bg["slope"] * (x - two_theta_min)
            + bg["hump_height"] * math.exp(-(((x - bg["hump_centre"]) / bg["hump_width"]) ** 2))
            + sum(_gaussian(x, p["height"], p["two_theta"], p["fwhm"]) for p in true_peaks)
        ) * (m / monitor_mean)
        # Counting statistics: Gaussian approximation of Poisson noise.
        counts.append(max(0, round(rng.gauss(expected, math.sqrt(max(expected, 1.0))))))
        monitor.append(round(m))
    return {
        "sample": sample,
        "seed": seed,
        "two_theta": two_theta,
        "counts": counts,
        "monitor": monitor,
        "true_peaks": true_peaks,
        "zero_shift": zero_shift,
    }


# --------------------------------------------------------------------------- corrections


def normalise(scan: dict[str, Any], *, reference: float | None = None) -> dict[str, Any]:
    """Divide the counts by the incident beam monitor.

    Args:
        scan: the output of `simulate_scan`.
        reference: the monitor value the pattern is scaled to (default: its mean).

    Returns:
        A pattern ``{"two_theta", "intensity", "sigma"}``; ``sigma`` is the
        counting uncertainty, scaled the same way.
    """
    monitor = scan["monitor"]
    if reference is None:
        reference = sum(monitor) / len(monitor)
    factors = [reference / m for m in monitor]
    return {
        "two_theta": list(scan["two_theta"]),
        "intensity": [c * f for c, f in zip(scan["counts"], factors, strict=True)],
        "sigma": [math.sqrt(max(c, 1)) * f for c, f in zip(scan["counts"], factors, strict=True)],
    }


def estimate_background(pattern: dict[str, Any], *, degree: int = 4, n_iterations: int = 40) -> list[float]:
    """Estimate a smooth background under the peaks (iteratively clipped polynomial).

    Each pass fits a polynomial, then lowers every point that lies above it
    to the fit, so that the peaks stop pulling the polynomial up.

    Args:
        pattern: ``{"two_theta", "intensity", ...}``.
        degree: the polynomial degree.
        n_iterations: the number of clipping passes.

    Returns:
        The background at each angle.
    """
    x = pattern["two_theta"]
    lo, hi = x[0], x[-1]
    scaled = [(2.0 * xi - lo - hi) / (hi - lo) for xi in x]  # in [-1, 1]: well conditioned
    y = list(pattern["intensity"])
    fit = y
    for _ in range(n_iterations):
        coefficients = _polyfit(scaled, y, degree)
        fit = [_polyval(coefficients, s) for s in scaled]
        y = [min(yi, fi) for yi, fi in zip(y, fit, strict=True)]
    return fit


def subtract_background(pattern: dict[str, Any], background: Sequence[float]) -> dict[str, Any]:
    """The pattern minus its background (the uncertainties are unchanged)."""
    return {
        "two_theta": list(pattern["two_theta"]),
        "intensity": [y - b for y, b in zip(pattern["intensity"], background, strict=True)],
        "sigma": list(pattern["sigma"]),
    }


# --------------------------------------------------------------------------- peak search


def find_peaks(
    pattern: dict[str, Any], *, min_height: float = 0.1, min_separation: float = 1.0, smoothing: int = 5
) -> list[dict[str, float]]:
    """Find the peaks of a background-subtracted pattern.

    Args:
        pattern: ``{"two_theta", "intensity", ...}``.
        min_height: the smallest peak kept, as a fraction of the highest.
        min_separation: two maxima closer than this (degrees) are one peak.
        smoothing: width of the moving average applied first (points).

    Returns:
        ``{"two_theta", "height", "fwhm"}`` of each peak, by increasing angle:
        first guesses for the fit.
    """
    x = pattern["two_theta"]
    y = pattern["intensity"]
    n = len(y)
    half = max(0, smoothing // 2)
    smooth = [sum(y[max(0, i - half) : i + half + 1]) / len(y[max(0, i - half) : i + half + 1]) for i in range(n)]
    threshold = min_height * max(smooth)
    candidates = [i for i in range(1, n - 1) if smooth[i - 1] <= smooth[i] > smooth[i + 1] and smooth[i] >= threshold]
    kept: list[int] = []
    for i in sorted(candidates, key=lambda i: -smooth[i]):
        if all(abs(x[i] - x[k]) >= min_separation for k in kept):
            kept.append(i)
    found = []
    for i in sorted(kept):
        half_max = smooth[i] / 2.0
        left = i
        while left > 0 and smooth[left] > half_max:
            left -= 1
        right = i
        while right < n - 1 and smooth[right] > half_max:
            right += 1
        found.append({"two_theta": x[i], "height": smooth[i], "fwhm": max(x[right] - x[left], x[1] - x[0])})
    return found


# --------------------------------------------------------------------------- iterative fit (ppfmethod tasks)


def setup_fit(
    *,
    pattern: dict[str, Any],
    guesses: Sequence[dict[str, float]],
    damping: float = 1e-3,
    **_: Any,
) -> dict[str, Any]:
    """Start values of the fit: one Gaussian per guess plus a constant offset.

    A ``ppfmethod`` task: it gets the dict that travels around the loop
    (here: the pattern, the guesses, and the loop settings ``tolerance`` and
    ``max_refinements`` when they are given) and adds its keys to it.

    Returns:
        ``{"params", "chi2", "damping", "iteration"}``.
    """
    if not guesses:
        msg = "no peak to fit: the peak search found nothing (lower 'min_height'?)"
        raise ValueError(msg)
    params = [0.0]
    for g in guesses:
        params += [float(g["height"]), float(g["two_theta"]), float(g["fwhm"])]
    return {"params": params, "chi2": _chi2(pattern, params), "damping": damping, "iteration": 0}


def refine_step(
    *, pattern: dict[str, Any], params: Sequence[float], chi2: float, damping: float, iteration: int, **_: Any
) -> dict[str, Any]:
    """One Levenberg-Marquardt step.

    The step solves ``(J^T J + damping * diag(J^T J)) delta = J^T r``. If it
    lowers chi-square, it is taken and the damping decreases; otherwise the
    parameters stay and the damping increases.

    Returns:
        ``{"params", "chi2", "previous_chi2", "damping", "iteration", "accepted"}``.
    """
    jtj, jtr = _normal_equations(pattern, params)
    damped = [[v * (1.0 + damping) if i == j else v for j, v in enumerate(row)] for i, row in enumerate(jtj)]
    try:
        delta = _solve(damped, jtr)
    except ZeroDivisionError:
        delta = [0.0] * len(params)
    trial = [p + d for p, d in zip(params, delta, strict=True)]
    # Widths must stay positive: a step that makes one negative is refused.
    valid = all(trial[i] > 0.0 for i in range(3, len(trial), 3))
    trial_chi2 = _chi2(pattern, trial) if valid else math.inf
    accepted = trial_chi2 < chi2
    return {
        "params": trial if accepted else list(params),
        "chi2": trial_chi2 if accepted else chi2,
        "previous_chi2": chi2,
        "damping": max(damping / 3.0, 1e-9) if accepted else damping * 4.0,
        "iteration": iteration + 1,
        "accepted": accepted,
    }


def check_convergence(
    *,
    chi2: float,
    previous_chi2: float,
    accepted: bool,
    damping: float,
    iteration: int,
    tolerance: float = 1e-5,
    max_refinements: int = 50,
    **_: Any,
) -> dict[str, Any]:
    """Decide whether the refinement loop goes round once more.

    The fit has converged when an accepted step improved chi-square by less
    than ``tolerance`` (relative), or when no step can improve it any more.
    The loop stops when the fit converged or after ``max_refinements`` steps.

    Returns:
        ``{"improvement", "converged", "done"}``; the links of the graph
        test ``done``.
    """
    improvement = (previous_chi2 - chi2) / previous_chi2 if previous_chi2 > 0 else 0.0
    converged = (accepted and improvement < tolerance) or damping > MAX_DAMPING
    return {"improvement": improvement, "converged": converged, "done": converged or iteration >= max_refinements}


def summarise_fit(
    *, pattern: dict[str, Any], params: Sequence[float], chi2: float, iteration: int, converged: bool, **_: Any
) -> dict[str, Any]:
    """The fitted peaks with their standard uncertainties (from the covariance matrix).

    Returns:
        ``{"fitted_peaks", "offset", "chi2", "iterations", "converged"}``.
    """
    jtj, _unused = _normal_equations(pattern, params)
    n = len(params)
    variances = []
    for k in range(n):
        unit = [1.0 if i == k else 0.0 for i in range(n)]
        try:
            variances.append(_solve(jtj, unit)[k] * chi2)
        except ZeroDivisionError:
            variances.append(math.inf)
    errors = [math.sqrt(abs(v)) for v in variances]
    fitted = [
        {
            "two_theta": params[i + 1],
            "two_theta_error": errors[i + 1],
            "height": params[i],
            "height_error": errors[i],
            "fwhm": params[i + 2],
            "fwhm_error": errors[i + 2],
        }
        for i in range(1, n, 3)
    ]
    return {"fitted_peaks": fitted, "offset": params[0], "chi2": chi2, "iterations": iteration, "converged": converged}


# --------------------------------------------------------------------------- results


def assess_quality(fit: dict[str, Any], *, max_chi2: float = 2.0) -> dict[str, Any]:
    """Agreement factors of the fit (Rietveld-style R_wp, R_exp and goodness of fit).

    Args:
        fit: the dict that leaves the refinement loop (pattern, params, chi2...).
        max_chi2: the largest reduced chi-square graded ``"good"``.

    Returns:
        ``{"r_wp", "r_exp", "chi2", "grade", "converged", "iterations"}``.
    """
    pattern = fit["pattern"]
    params = fit["params"]
    model = _model(pattern["two_theta"], params)
    weights = [1.0 / (s * s) for s in pattern["sigma"]]
    y = pattern["intensity"]
    numerator = sum(w * (yi - mi) ** 2 for w, yi, mi in zip(weights, y, model, strict=True))
    denominator = sum(w * yi * yi for w, yi in zip(weights, y, strict=True))
    r_wp = math.sqrt(numerator / denominator)
    r_exp = math.sqrt(max(1, len(y) - len(params)) / denominator)
    chi2 = fit["chi2"]
    grade = "good" if fit["converged"] and chi2 <= max_chi2 else "poor"
    return {
        "r_wp": r_wp,
        "r_exp": r_exp,
        "chi2": chi2,
        "grade": grade,
        "converged": fit["converged"],
        "iterations": fit["iterations"],
    }


def peak_table(
    fit: dict[str, Any], *, wavelength: float = 1.5406, scherrer_constant: float = 0.9, instrument_fwhm: float = 0.1
) -> list[dict[str, float]]:
    """d-spacings (Bragg's law) and crystallite sizes (Scherrer's equation) of the fitted peaks.

    Args:
        fit: the dict that leaves the refinement loop.
        wavelength: X-ray wavelength in angstrom (default: Cu K-alpha1).
        scherrer_constant: the shape factor K.
        instrument_fwhm: the instrument's own peak width (degrees), removed in quadrature.

    Returns:
        One row per peak: ``two_theta``, ``two_theta_error``, ``d_spacing``
        (angstrom), ``fwhm``, ``area`` and ``crystallite_size`` (nanometres).
    """
    rows = []
    for p in fit["fitted_peaks"]:
        theta = math.radians(p["two_theta"] / 2.0)
        sample_fwhm = math.sqrt(max(p["fwhm"] ** 2 - instrument_fwhm**2, 1e-12))
        size_angstrom = scherrer_constant * wavelength / (math.radians(sample_fwhm) * math.cos(theta))
        rows.append(
            {
                "two_theta": p["two_theta"],
                "two_theta_error": p["two_theta_error"],
                "d_spacing": wavelength / (2.0 * math.sin(theta)),
                "fwhm": p["fwhm"],
                "area": p["height"] * p["fwhm"] * GAUSS_AREA,
                "crystallite_size": size_angstrom / 10.0,
            }
        )
    return rows


def make_report(scan: dict[str, Any], peaks: Sequence[dict[str, float]], quality: dict[str, Any]) -> dict[str, Any]:
    """Everything a user looks at, in one dict.

    Returns:
        ``{"sample", "seed", "n_points", "true_positions", "peaks", "quality"}``;
        ``peaks`` is the `peak_table`, each row with the ``hkl`` and
        ``true_two_theta`` of the simulated peak within 0.5 degree of it
        (``""`` and ``None`` when there is none).
    """
    truth = scan["true_peaks"]
    rows = []
    for row in peaks:
        nearest = min(truth, key=lambda t: abs(t["two_theta"] - row["two_theta"]), default=None)
        if nearest is not None and abs(nearest["two_theta"] - row["two_theta"]) < 0.5:
            rows.append({"hkl": nearest["hkl"], "true_two_theta": nearest["two_theta"], **row})
        else:
            rows.append({"hkl": "", "true_two_theta": None, **row})
    return {
        "sample": scan["sample"],
        "seed": scan["seed"],
        "n_points": len(scan["two_theta"]),
        "true_positions": [t["two_theta"] for t in truth],
        "peaks": rows,
        "quality": quality,
    }
