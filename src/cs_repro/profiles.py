"""Profiles: conf/profile/<name>.yaml composed by Hydra into params.yaml.

`dvc exp run -S profile=paper` does the same inside DVC (hydra.enabled in .dvc/config); this module
lets `cs-repro use-profile paper` do it for a plain `dvc repro`, and lets the tests check that the
committed params.yaml is exactly the quick profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cs_repro.errors import UserError

CONF_DIR = Path("conf")


def available_profiles(conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir) / "profile").glob("*.yaml"))


def compose_profile(name: str, overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """params as a dict: conf/config.yaml with profile=<name> and any Hydra overrides (key=value)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf_dir = Path(conf_dir).resolve()
    if name not in available_profiles(conf_dir):
        raise UserError(f"unknown profile {name!r}; choose one of: {', '.join(available_profiles(conf_dir))}")
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
            config = compose(config_name="config", overrides=[f"profile={name}", *(overrides or [])])
    except Exception as error:  # Hydra's override grammar errors
        raise UserError(f"cannot compose profile {name!r}: {str(error).splitlines()[0]}") from None
    return OmegaConf.to_container(config, resolve=True)


def write_params(params: dict[str, Any], path: Path) -> None:
    from cs_repro.io import atomic_write_text

    atomic_write_text(yaml.safe_dump(params, sort_keys=False), path)


def load_profile(name: str, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """A profile as a dict: through Hydra when it is installed (it comes with DVC), else by reading the
    YAML and resolving its plain `${a.b}` references (enough for our profiles; for machines without DVC)."""
    try:
        import hydra  # noqa: F401
    except ImportError:
        path = Path(conf_dir) / "profile" / f"{name}.yaml"
        if not path.exists():
            raise UserError(f"unknown profile {name!r}; choose one of: {', '.join(available_profiles(conf_dir))}")
        raw = yaml.safe_load(path.read_text())
        return _resolve_references(raw, raw)
    return compose_profile(name, conf_dir=conf_dir)


def _resolve_references(node: Any, root: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {key: _resolve_references(value, root) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_references(value, root) for value in node]
    if isinstance(node, str) and node.startswith("${") and node.endswith("}"):
        target: Any = root
        for key in node[2:-1].split("."):
            target = target[key]
        return _resolve_references(target, root)
    return node
