"""bae: Blockwise Advantage Estimation and the Outcome-Conditioned Baseline for multi-objective RL
of language models (Pavlenko et al., arXiv 2602.10231).

    from bae.advantages import blockwise_advantages      # r[N, K], group ids, o[N, K] -> A[N, K]
    from bae.objective import token_advantages            # A[N, K], token block ids -> A[N, T]
    from bae import tasks                                 # tasks.get("self_confidence").score(text, gold)
"""

__version__ = "0.1.0"
