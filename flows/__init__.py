"""RealNVP-style coupling flows of the VLVAE paper (Eq. 7-8); imports nothing of the project."""
from .coupling import AffineCouplingFlow, ConditionalAffineCouplingFlow

__all__ = ["AffineCouplingFlow", "ConditionalAffineCouplingFlow"]
