"""Configuration of an flm-grow masked checkpoint (written into the folder by flm-grow).

The folder holds a grown model whose new units are still masked (Masked Structural Growth): the
weights are those of an ordinary model of the base family below, but the function is the masked
one, so its config.json names `model_type` "flm_grow_masked", which plain transformers does not
know: `AutoModelForCausalLM.from_pretrained(folder)` refuses it instead of loading a different
function. `trust_remote_code=True` loads it with modeling_flm_grow.py, which attaches the masks
(masks.safetensors); `flm-grow bake` writes the plain model once every mask is 1.

Needs only torch and transformers. The config is the base family's own config class with another
model_type, so every field keeps the base family's defaults and meaning.
"""

from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# The base family's model_type (flm-grow writes this line per folder; every other line is the same
# in every folder). Tele-FLM (µP) has no transformers class: it runs on Llama's, µP applied by
# modeling_flm_grow.py.
BASE_MODEL_TYPE = "llama"
MASKED_MODEL_TYPE = "flm_grow_masked"
_TRANSFORMERS_TYPE = {"teleflm": "llama", "tele_flm": "llama", "flm": "llama"}.get(BASE_MODEL_TYPE, BASE_MODEL_TYPE)
BASE_CONFIG_CLASS = CONFIG_MAPPING[_TRANSFORMERS_TYPE]


class FlmGrowMaskedConfig(BASE_CONFIG_CLASS):
    """The base family's config; `flm_grow` holds base_model_type, base_architectures and how to load."""

    model_type = MASKED_MODEL_TYPE
