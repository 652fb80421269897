"""Scenarios: what a peer holds and how the model is tested, beyond HL's label skew.

- :mod:`~hlgym.envs.scenarios.domain_shift`: peers hold their data in different styles
  (domains) and the reward tests on an unseen target domain (FedKA's setting).
"""
