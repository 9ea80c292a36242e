"""Champion/challenger: whether a retrained model replaces the serving one, and why (pure).

Both models are scored on the same rolling-origin folds (`shelfcast retrain`). The rule:

1. no champion (an empty model directory): the challenger is promoted;
2. the challenger is the champion (same version, i.e. the same weights): nothing to promote;
3. a challenger without a finite pinball loss is never promoted; a champion without one is
   replaced;
4. the challenger is promoted when its mean pinball loss is lower than the champion's by more
   than `margin` (relative, default 0.5%), and kept out when it is higher by more than that;
5. tie-break, pinball within the margin: the challenger is promoted only when its 80% interval
   coverage is closer to 0.80 than the champion's by more than `coverage_margin` (absolute,
   default 0.01); otherwise the champion stays (a tie never churns the serving model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "COVERAGE_MARGIN",
    "NOMINAL_COVERAGE_80",
    "PINBALL_MARGIN",
    "ModelScores",
    "PromotionDecision",
    "decide_promotion",
]

PINBALL_MARGIN = 0.005  # relative: the challenger must be > 0.5% better on pinball loss
COVERAGE_MARGIN = 0.01  # absolute: on a pinball tie, > 1 point closer to 80% coverage
NOMINAL_COVERAGE_80 = 0.8


@dataclass(frozen=True)
class ModelScores:
    """A model's backtest, pooled over the folds: mean pinball loss over the quantile levels
    (lower is better), share of actuals inside the central 80% interval (best at 0.80) and
    MASE of the mean forecast (lower is better)."""

    pinball: float
    coverage_80: float
    mase: float

    @property
    def coverage_error(self) -> float:
        """Distance of the 80% interval's coverage from its nominal 0.80."""
        return abs(self.coverage_80 - NOMINAL_COVERAGE_80)

    def to_json(self) -> dict[str, float | None]:
        """{"pinball", "coverage_80", "mase"}; NaN (e.g. MASE of flat series) as None."""
        return {k: (v if math.isfinite(v) else None) for k, v in
                (("pinball", self.pinball), ("coverage_80", self.coverage_80),
                 ("mase", self.mase))}

    @classmethod
    def from_mapping(cls, scores: Mapping[str, float | None]) -> ModelScores:
        """From a backtest's per-model summary (extra keys ignored; None read as NaN)."""

        def value(key: str) -> float:
            v = scores.get(key)
            return float("nan") if v is None else float(v)

        return cls(value("pinball"), value("coverage_80"), value("mase"))


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger replaces the champion, why (one sentence for people), and the
    challenger's relative pinball gain over the champion (None without a champion)."""

    promote: bool
    reason: str
    pinball_gain: float | None = None


def decide_promotion(
    challenger: ModelScores,
    champion: ModelScores | None,
    *,
    challenger_version: str | None = None,
    champion_version: str | None = None,
    margin: float = PINBALL_MARGIN,
    coverage_margin: float = COVERAGE_MARGIN,
) -> PromotionDecision:
    """Apply the champion/challenger rule of this module's docstring."""
    if margin < 0 or coverage_margin < 0:
        raise ValueError(f"margins must be >= 0, got {margin} and {coverage_margin}")
    if champion is None:
        return PromotionDecision(True, "no champion in the model directory: the challenger "
                                       "is the first model")
    if challenger_version is not None and challenger_version == champion_version:
        return PromotionDecision(False, f"the challenger is the champion ({champion_version}, "
                                        "same weights): nothing to promote", 0.0)
    if not math.isfinite(challenger.pinball):
        return PromotionDecision(False, "the challenger's backtest has no finite pinball loss")
    if not math.isfinite(champion.pinball):
        return PromotionDecision(True, "the champion's backtest has no finite pinball loss")
    if champion.pinball > 0:
        gain = (champion.pinball - challenger.pinball) / champion.pinball
    else:  # a perfect champion: the challenger can only tie it or lose
        gain = 0.0 if challenger.pinball == 0 else -math.inf
    pinballs = f"pinball {challenger.pinball:.4g} vs champion {champion.pinball:.4g}"
    if gain > margin:
        return PromotionDecision(True, f"challenger wins: {pinballs} ({_pct(-gain)}, "
                                       f"margin {margin:.1%})", gain)
    if gain < -margin:
        return PromotionDecision(False, f"champion kept: {pinballs} ({_pct(-gain)}, "
                                        f"challenger worse)", gain)
    cov = (f"80% coverage {challenger.coverage_80:.3f} vs champion {champion.coverage_80:.3f}")
    if (math.isfinite(challenger.coverage_error) and (
            not math.isfinite(champion.coverage_error)
            or champion.coverage_error - challenger.coverage_error > coverage_margin)):
        return PromotionDecision(True, f"challenger wins the tie-break: {pinballs} (within "
                                       f"{margin:.1%}), {cov} (closer to 0.80 by more than "
                                       f"{coverage_margin:g})", gain)
    return PromotionDecision(False, f"champion kept on a tie: {pinballs} (within "
                                    f"{margin:.1%}), {cov} (not closer to 0.80 by more than "
                                    f"{coverage_margin:g})", gain)


def _pct(change: float) -> str:
    """A relative change as a signed percentage ("-12.3%")."""
    return "-inf%" if change == -math.inf else ("+inf%" if change == math.inf
                                                else f"{change:+.1%}")
