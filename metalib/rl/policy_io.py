"""Save and load trained RL² policies together with the environment they were trained on.

A checkpoint (`metalib.save_checkpoint`, loaded with ``weights_only=True``) holds the GRU's state dict
and plain metadata: the environment's class and fields, the `RL2Config`, the reproducing command,
the measured return and wall time. Used by benchmarks/rl2_*.py and notebook 07.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..checkpoint import checkpoint_dir, load_checkpoint, save_checkpoint
from .envs import BernoulliBandit, DependentBandit, GridNavi
from .rl2 import RL2Policy

__all__ = ["ENVIRONMENTS", "save_policy", "load_policy", "env_from_meta"]

ENVIRONMENTS = {cls.__name__: cls for cls in (BernoulliBandit, DependentBandit, GridNavi)}


def save_policy(path: str | Path, policy: RL2Policy, env, **meta) -> Path:
    """Write ``policy`` with ``env`` (class name and fields) and plain ``meta`` (config, command, ...)."""
    env_meta = {"class": type(env).__name__, **dataclasses.asdict(env)}
    return save_checkpoint(path, policy.state_dict(), env=env_meta, hidden=policy.hidden, **meta)


def env_from_meta(env_meta: dict):
    """Rebuild the environment stored by `save_policy`."""
    fields = dict(env_meta)
    name = fields.pop("class")
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r} in checkpoint; known: {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name](**fields)


def load_policy(name_or_path: str | Path, device="cpu"):
    """Load (policy, env, meta); a bare file name is looked up in ``data/checkpoints/``."""
    path = Path(name_or_path)
    if not path.is_file() and not path.is_absolute() and len(path.parts) == 1:
        path = checkpoint_dir() / path
    blob = load_checkpoint(path, map_location=device)
    meta = blob["meta"]
    env = env_from_meta(meta["env"])
    policy = RL2Policy(env.obs_dim, env.n_actions, int(meta["hidden"])).to(device)
    policy.load_state_dict(blob["state_dict"])
    policy.eval()
    return policy, env, meta
