# Local stubs for ml_collections 1.1.0, which ships no type information. Without them pyright
# infers `ConfigDict.__getattr__`'s return type from its body (a union of every field type) and
# reports `config.augment.crop_pad = 1` as an error. Only the API kd_jax uses is declared; the
# signatures follow ml_collections/config_dict/config_dict.py and config_flags/config_flags.py.
from ml_collections import config_dict as config_dict
from ml_collections import config_flags as config_flags
from ml_collections.config_dict import ConfigDict as ConfigDict
from ml_collections.config_dict import FieldReference as FieldReference
from ml_collections.config_dict import FrozenConfigDict as FrozenConfigDict

__all__ = ("ConfigDict", "FieldReference", "FrozenConfigDict")
