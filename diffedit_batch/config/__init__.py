"""The job config: typed sections validated once, at the door.

A config is YAML with one mapping per section (`model:`, `edit:`, `job:`, `output:`, `storage:`, `metrics:`,
`concepts:`, `captions:`, `candidates:`, `prompts:`, `augment:`, `region:`). Each section maps one to one onto a
frozen dataclass whose fields carry their own help text:

- `schema`: `Config`, the table of sections; `sections`: the sections the config owns;
- `fields`: field types and value checks; `loading`: YAML, mappings and overrides in; `reference`: the docs.
"""

from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.engine.settings import EditSettings

from .fields import ConfigError
from .loading import apply_overrides, config_from_dict, load_config
from .reference import config_reference_markdown, write_config_reference
from .schema import SECTIONS, Config
from .sections import (
    AugmentConfig,
    CandidatesConfig,
    CaptionsConfig,
    ConceptsConfig,
    JobConfig,
    MetricsConfig,
    InputConfig,
    ModelConfig,
    OutputConfig,
    PromptsConfig,
    RegionConfig,
)

__all__ = [
    "SECTIONS",
    "AugmentConfig",
    "CandidatesConfig",
    "CaptionsConfig",
    "ConceptsConfig",
    "Config",
    "ConfigError",
    "EditSettings",
    "JobConfig",
    "MetricsConfig",
    "InputConfig",
    "ModelConfig",
    "OutputConfig",
    "PromptsConfig",
    "RegionConfig",
    "StorageOptions",
    "apply_overrides",
    "config_from_dict",
    "config_reference_markdown",
    "load_config",
    "write_config_reference",
]
