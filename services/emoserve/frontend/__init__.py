"""Text front end: Chinese/English text to EmotiVoice phonemes and token ids."""

from .english import cmudict_lexicon, default_lexicon, read_lexicon, write_lexicon
from .mixed import Frontend, read_tokens

__all__ = ["Frontend", "cmudict_lexicon", "default_lexicon", "read_lexicon", "read_tokens", "write_lexicon"]
