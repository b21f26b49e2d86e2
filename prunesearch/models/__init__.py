"""Model zoo + registry: architectures only (training lives in prunesearch.training).

    create_model("resnet20", in_chans=1, num_classes=10)     a zoo model
    build_model("mynets:build", (1, 28, 28), 10)             zoo or user model, checked on a batch
"""

# importing the zoo modules registers their models
from prunesearch.models import mlp, mobilenet, resnet, vgg, vit  # noqa: F401
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

__all__ = [
    "ModelFactory",
    "StagedModel",
    "build_model",
    "check_model_io",
    "create_model",
    "depth_stages",
    "list_models",
    "load_user_model",
    "register_model",
    "split_input_shape",
]
