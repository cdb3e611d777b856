"""The metric definitions of METRICS.md as plain numpy functions, for your own arrays.

The analyzers compute every number inspector reports with these; they need no model, no
torch and no run file: e.g. ``metrics.debiased_cka_from_sums`` on streamed sums,
``metrics.participation_ratio`` of a similarity matrix, ``metrics.mean_attention_distance``
of attention maps over a token grid (``metrics.token_centres``, ``metrics.distance_matrix``).
"""

from __future__ import annotations

from .analyzers._distance import attention_entropy as attention_entropy
from .analyzers._distance import js_divergence as js_divergence
from .analyzers._distance import mean_attention_distance as mean_attention_distance
from .analyzers._distance import pairwise_js_divergence as pairwise_js_divergence
from .analyzers._erf import erf_axis_std as erf_axis_std
from .analyzers._erf import erf_mean_distance as erf_mean_distance
from .analyzers._erf import erf_radius as erf_radius
from .analyzers._erf import radius_intervals as radius_intervals
from .analyzers._erf import replknet_area_ratios as replknet_area_ratios
from .analyzers._geometry import distance_matrix as distance_matrix
from .analyzers._geometry import token_centres as token_centres
from .analyzers._importance import largest_prunable_fraction as largest_prunable_fraction
from .analyzers._importance import normalise_importance as normalise_importance
from .analyzers._importance import rankdata as rankdata
from .analyzers._importance import spearman as spearman
from .analyzers._importance import spearman_interval as spearman_interval
from .analyzers._intervals import IntervalSpec as IntervalSpec
from .analyzers._intervals import bootstrap as bootstrap
from .analyzers._intervals import bootstrap_mean as bootstrap_mean
from .analyzers._rollout import attention_rollout as attention_rollout
from .analyzers._similarity import biased_cka_from_moments as biased_cka_from_moments
from .analyzers._similarity import correlation_from_covariance as correlation_from_covariance
from .analyzers._similarity import debiased_cka_from_sums as debiased_cka_from_sums
from .analyzers._similarity import linear_cka as linear_cka
from .analyzers._similarity import participation_ratio as participation_ratio
from .analyzers._similarity import redundancy_summary as redundancy_summary

__all__ = [
    "IntervalSpec",
    "attention_entropy",
    "attention_rollout",
    "biased_cka_from_moments",
    "bootstrap",
    "bootstrap_mean",
    "correlation_from_covariance",
    "debiased_cka_from_sums",
    "distance_matrix",
    "erf_axis_std",
    "erf_mean_distance",
    "erf_radius",
    "js_divergence",
    "largest_prunable_fraction",
    "linear_cka",
    "mean_attention_distance",
    "normalise_importance",
    "pairwise_js_divergence",
    "participation_ratio",
    "radius_intervals",
    "rankdata",
    "redundancy_summary",
    "replknet_area_ratios",
    "spearman",
    "spearman_interval",
    "token_centres",
]
