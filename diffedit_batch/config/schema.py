"""The whole job config: one frozen dataclass whose fields are the YAML sections, in order.

`Config` is the only table of sections: adding a section is adding a field here (`SECTIONS` derives from it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.engine.settings import EditSettings

from .fields import ConfigError, type_hints
from .sections import (
    AugmentConfig,
    CandidatesConfig,
    CaptionsConfig,
    ConceptsConfig,
    InputConfig,
    JobConfig,
    MetricsConfig,
    ModelConfig,
    OutputConfig,
    PromptsConfig,
    RegionConfig,
)


@dataclass(frozen=True)
class Config:
    """The whole job config. Each field is one YAML section; this class is the table of sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    edit: EditSettings = field(default_factory=EditSettings)
    job: JobConfig = field(default_factory=JobConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageOptions = field(default_factory=StorageOptions)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    region: RegionConfig = field(default_factory=RegionConfig)

    def __post_init__(self) -> None:
        """Checks across sections: the candidates' draws must be valid edit settings, their CLIP scores need a
        CLIP model."""
        from diffedit_batch.recipe.candidates import CLIP_SCORES, check_vary

        try:
            check_vary(self.candidates.vary, self.edit)
        except ValueError as error:
            raise ConfigError(f"candidates.{error}", key="candidates.vary") from None
        clip = sorted(self.candidates.scores_used & set(CLIP_SCORES))
        if clip and self.metrics.clip_model is None:
            raise ConfigError(f"candidates use CLIP scores ({', '.join(clip)}) but metrics.clip_model is null; set "
                              "metrics.clip_model (e.g. openai/clip-vit-large-patch14) or rank and filter by other "
                              "scores", key="metrics.clip_model")
        if "clip_label" in self.candidates.scores_used and self.prompts.label_template is None:
            raise ConfigError("candidates use the clip_label score but prompts.label_template is null; set it to a "
                              "template naming the label column, e.g. 'a photo of a {label}'",
                              key="prompts.label_template")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict of builtins (tuples as lists), YAML/JSON-serialisable; `config_from_dict` reads it back."""
        return {
            section: {
                f.name: plain(getattr(getattr(self, section), f.name))
                for f in dataclasses.fields(getattr(self, section))
            }
            for section in SECTIONS
        }


def plain(value: Any) -> Any:
    """A section value as a YAML/JSON builtin (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def _sections() -> dict[str, type]:
    hints = type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


SECTIONS: dict[str, type] = _sections()
"""Section name -> section class, in YAML order; derived from `Config`'s fields."""
