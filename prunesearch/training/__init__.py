"""Training: the one loop (`loop`), the dense model and its cache (`dense`), the supernet stage
(`supernet`), fine-tuning of chosen points (`finetune`) and data-parallel processes under
torchrun (`distributed`).

    dense_model(cfg.model, data, seed=0, device=dev)         the run's trained dense model
    train_model(model, data, recipe, seed=0)                  the loop every stage uses
"""

from prunesearch.training.dense import checkpoint_key, dense_model
from prunesearch.training.loop import Distillation, TrainReport, random_translate, train_model

__all__ = ["Distillation", "TrainReport", "checkpoint_key", "dense_model", "random_translate",
           "train_model"]
