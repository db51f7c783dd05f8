"""skillmix: the SKILL-MIX evaluation of language models, locally or on Kubernetes.

The public Python API lives in :mod:`skillmix.api`; this module stays import-light so that
``skillmix --help`` starts fast.
"""

__version__ = "0.1.0"
