"""Stage `training_code`: one digest of the code every training stage runs.

dvc.yaml lists that code once, as this stage's deps; the training stages depend on the digest file, so
an edit to any of it re-runs them all, and an edit elsewhere (the report, the CLI) re-runs none. The
digest covers the files of this stage's deps under src/ (read from dvc.yaml: the list lives in one
place), so it changes exactly when DVC sees one of them change.
"""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.errors import UserError
from cs_repro.stage_cli import log, run_stage


def code_digest(
    out: Annotated[Path, typer.Option(help="file to write the sha256 into")],
    stage: Annotated[str, typer.Option(help="stage of dvc.yaml whose deps are hashed")] = "training_code",
    dvc_yaml: Annotated[Path, typer.Option(help="the pipeline file")] = Path("dvc.yaml"),
) -> None:
    """Write the sha256 of every file a dvc.yaml stage depends on (bytecode caches aside)."""
    import yaml

    from cs_repro.fingerprint import digest_of_paths
    from cs_repro.io import atomic_write_text

    stages = yaml.safe_load(dvc_yaml.read_text()).get("stages", {})
    if stage not in stages:
        raise UserError(f"{dvc_yaml} has no stage {stage!r}")
    root = dvc_yaml.resolve().parent
    # this script is a dep too (an edit re-runs the stage) but not part of the digest: it shapes no result
    paths = [root / dep for dep in stages[stage].get("deps", []) if not dep.startswith("stages/")]
    missing = [str(p.relative_to(root)) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"stage {stage} depends on {', '.join(missing)}, which does not exist")
    digest = digest_of_paths(paths, root)
    atomic_write_text(f"{digest}\n", out)
    log.info("%s: sha256 %s of the %d paths stage %s depends on", out, digest[:16], len(paths), stage)


if __name__ == "__main__":
    run_stage(code_digest)
