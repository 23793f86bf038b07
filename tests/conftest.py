"""Hypothesis profiles: a fast default for development and a derandomized one for CI.

The CI profile is chosen when the environment variable CI is set (CI machines set CI=true);
HYPOTHESIS_PROFILE=<name> overrides either ("thorough": 300 examples, for a one-off deep run).
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
