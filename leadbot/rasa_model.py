"""Train the project's Rasa model once per content, cached in `models/` under a fingerprint of its inputs.

One way to get the model for scripts and tests alike: `python -m leadbot.rasa_model` prints the path of the model
for the current `config.yml`, `domain/`, `data/` and custom NLU component, training it first when `models/` does not
have it yet (training takes minutes; re-runs take a second).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RASA_BIN = ROOT / ".venv-rasa" / "bin" / "rasa"
MODELS_DIR = ROOT / "models"
# The custom NLU component is part of the model's behaviour, so it is part of the fingerprint.
_INPUTS = ("config.yml", "domain", "data", "leadbot/rasa_nlu.py")


def fingerprint() -> str:
    digest = hashlib.sha256()
    for name in _INPUTS:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix not in (".yml", ".yaml", ".py"):
                continue
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def trained_model(timeout: float = 1800) -> Path:
    """The model for the current inputs, trained now if `models/` does not have it yet."""
    name = f"leadbot-{fingerprint()}"
    model = MODELS_DIR / f"{name}.tar.gz"
    if model.exists():
        return model
    MODELS_DIR.mkdir(exist_ok=True)
    result = subprocess.run(
        [
            str(RASA_BIN), "train",
            "--domain", "domain", "--data", "data", "--config", "config.yml",
            "--out", str(MODELS_DIR), "--fixed-model-name", name,
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RASA_TELEMETRY_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0 or not model.exists():
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise RuntimeError(f"rasa train failed ({result.returncode}):\n{output}")
    return model


if __name__ == "__main__":
    try:
        print(trained_model())
    except RuntimeError as exc:
        sys.exit(str(exc))
