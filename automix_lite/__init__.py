"""automix_lite: AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) without the framework."""
__version__ = "0.1.0"
