"""What the text side takes and tells: one generation's request, and the loaded model's facts.

`TextRequest` is everything that decides one completion; `ModelInfo` is what `TextStudio.load_base` and
`base_info` answer. Every field of a request after the prompt has a default, so a new optional one (a sampling
setting, say) is one line here; callers name the fields they set. The image side's twins are in
peft_core/image/requests.py.
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TextRequest:
    """One generation: everything that decides the text, so equal requests give equal text."""

    prompt: str
    adapters: tuple[str, ...] = ()  # active for this request only; empty is the base model
    use_adapters: bool = True  # False is the disable toggle: exactly the base output
    max_new_tokens: int = 32
    do_sample: bool = False  # False: greedy, and seed and temperature change nothing
    seed: int = 0
    temperature: float = 1.0


@dataclass(frozen=True)
class ModelInfo:
    """The loaded base model, as shown to users and API clients (/load_text_model answers `to_dict()` and the
    adapters)."""

    model_id: str
    revision: str
    model_class: str
    model_type: str  # the config's model_type, e.g. "llama": peft's default targets depend on it
    device: str
    dtype: str
    num_parameters: int  # of the base model, adapters not counted
    context_length: int | None  # prompt + new tokens must fit; None when the config does not say
    default_target_modules: list[str] | None  # what add_adapter uses when target_modules is empty

    def to_dict(self) -> dict:
        return asdict(self)
