"""Model zoo + registry, dense training and the dense-checkpoint cache.

    create_model("resnet20", in_chans=1, num_classes=10)     a zoo model
    build_model("mynets:build", (1, 28, 28), 10)             zoo or user model, checked on a batch
    dense_model(cfg.model, data, seed=0, device=dev)         the run's trained dense model
"""

# importing the zoo modules registers their models
from prunesearch.models import mlp, mobilenet, resnet, vgg, vit  # noqa: F401
from prunesearch.models.checkpoint import checkpoint_key, default_cache_dir, dense_model
from prunesearch.models.depth import StagedModel, depth_stages
from prunesearch.models.registry import (
    ModelFactory,
    build_model,
    check_model_io,
    create_model,
    list_models,
    load_user_model,
    register_model,
    split_input_shape,
)
from prunesearch.models.train import (
    Distillation,
    TrainReport,
    evaluate_accuracy,
    evaluate_score,
    random_translate,
    train_model,
)

__all__ = [
    "Distillation",
    "ModelFactory",
    "StagedModel",
    "TrainReport",
    "build_model",
    "check_model_io",
    "checkpoint_key",
    "create_model",
    "default_cache_dir",
    "dense_model",
    "depth_stages",
    "evaluate_accuracy",
    "evaluate_score",
    "list_models",
    "load_user_model",
    "random_translate",
    "register_model",
    "split_input_shape",
    "train_model",
]
