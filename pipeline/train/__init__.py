"""Training a DTC on Ray Train: the manifest and its pairs (`data`, `pairs`, `augment`), the objective (`step`), one
worker's optimisation (`learner`), Ray Train's per-worker loop (`loop`) and the driver (`trainer.train`).

Nothing is imported here, so Ray Data's CPU tasks that only build pairs never import torch.
"""
