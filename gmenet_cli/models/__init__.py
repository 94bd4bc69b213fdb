"""Models: the HR teacher and the GME-Net student, built through the registry."""

from gmenet_cli.models.registry import count_flops, count_params, create_model, get_spec, list_models

__all__ = ["create_model", "list_models", "get_spec", "count_params", "count_flops"]
