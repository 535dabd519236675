"""The policy engine: data, usage and output policies loaded from declarative TOML files, returning
explainable decisions. Imports neither Django nor torch."""

from policies.data import DataPolicy, DatasetVerdict
from policies.decisions import Decision, Outcome, Verdict
from policies.loader import DEFAULT_DIR, PolicyError, PolicySet, load_policies
from policies.near_copy import LegacyHashIndex, NearCopyIndex, NearCopyIndexError, NearCopyMatch
from policies.output import ImageCheck, OutputPolicy, perceptual_hash
from policies.semantic import SemanticLayer
from policies.usage import UsageContext, UsagePolicy

__all__ = [
    "DEFAULT_DIR", "DataPolicy", "DatasetVerdict", "Decision", "ImageCheck", "LegacyHashIndex", "NearCopyIndex",
    "NearCopyIndexError", "NearCopyMatch", "Outcome", "OutputPolicy", "PolicyError", "PolicySet", "SemanticLayer",
    "UsageContext", "UsagePolicy", "Verdict", "load_policies", "perceptual_hash",
]
