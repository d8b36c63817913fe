"""The coloured-digits testbed: data from scikit-learn, tiny SD teachers, domain FID features, prompt accuracy."""

from .digits import (
    CAPTION_TEMPLATE,
    COLOR_NAMES,
    COLORS,
    DigitsConfig,
    DigitsSplit,
    build_split,
    caption_for,
    parse_caption,
    write_imagefolder,
)
from .models import ClassifierArch, DigitColorClassifier, UNetArch, VAEArch, build_unet, build_vae
from .scorers import PromptAccuracy, load_classifier, load_prompt_accuracy, load_testbed_features

__all__ = [
    "CAPTION_TEMPLATE",
    "COLORS",
    "COLOR_NAMES",
    "ClassifierArch",
    "DigitColorClassifier",
    "DigitsConfig",
    "DigitsSplit",
    "PromptAccuracy",
    "UNetArch",
    "VAEArch",
    "build_split",
    "build_unet",
    "build_vae",
    "caption_for",
    "load_classifier",
    "load_prompt_accuracy",
    "load_testbed_features",
    "parse_caption",
    "write_imagefolder",
]
