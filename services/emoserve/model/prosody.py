"""Prosody controls of a request (speed, pitch, energy): ranges and defaults, free of torch so the gateway
can validate requests without loading a model."""

from __future__ import annotations

PROSODY_RANGES: dict[str, tuple[float, float]] = {
    "speed": (0.5, 2.0),
    "pitch_semitones": (-12.0, 12.0),
    "energy": (0.5, 2.0),
}
"""Accepted range of each prosody control (inclusive)."""
PROSODY_DEFAULTS: dict[str, float] = {"speed": 1.0, "pitch_semitones": 0.0, "energy": 1.0}


def resolve_prosody(speed: float = 0.0, pitch_semitones: float = 0.0, energy: float = 0.0) -> tuple[float, float, float]:
    """Maps API values to model values: 0 means the default; anything else must lie in its range.

    Raises:
        ValueError: naming the out-of-range (or non-finite) field and its accepted range.
    """
    values = {"speed": speed, "pitch_semitones": pitch_semitones, "energy": energy}
    out = []
    for name, value in values.items():
        low, high = PROSODY_RANGES[name]
        if value == 0:
            out.append(PROSODY_DEFAULTS[name])
        elif low <= value <= high:
            out.append(float(value))
        else:
            raise ValueError(f"{name}={value} is out of range: use 0 for the default or a value in [{low}, {high}]")
    return out[0], out[1], out[2]
