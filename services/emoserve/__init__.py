"""emoserve: gRPC serving for EmotiVoice-style emotional text-to-speech."""

__version__ = "0.1.0"
