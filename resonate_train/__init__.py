"""resonate_train: flow-matching text-to-audio training with ttaeval scorers as rewards.

It imports ttaeval, never the other way round. The model, samplers, pretraining, GRPO and DPO
arrive with their issue; today the package holds its command line only.
"""

__version__ = "0.1.0"
