"""The policy engine: data, usage and output policies loaded from declarative TOML files, returning
explainable decisions. Imports neither Django nor torch."""

from policies.data import DataPolicy, DatasetVerdict
from policies.decisions import Decision, Outcome, Verdict
from policies.loader import DEFAULT_DIR, PolicyError, PolicySet, load_policies
from policies.output import NearCopyIndex, OutputPolicy, perceptual_hash
from policies.usage import UsageContext, UsagePolicy

__all__ = [
    "DEFAULT_DIR", "DataPolicy", "DatasetVerdict", "Decision", "NearCopyIndex", "Outcome", "OutputPolicy",
    "PolicyError", "PolicySet", "UsageContext", "UsagePolicy", "Verdict", "load_policies", "perceptual_hash",
]
