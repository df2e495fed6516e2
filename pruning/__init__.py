"""What shrinks: importance criteria, physical neuron removal, sensitivity scans, pruning plans.

Import submodules directly (`pruning.removal`, `pruning.plan`); this file stays empty so that
importing one module (say, the criteria names for config checks) does not pull in Lightning.
"""
